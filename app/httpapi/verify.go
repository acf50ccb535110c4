package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Verifier runs the checks of `bulkhead verify` against the live database
// and returns every finding. It only reads the catalogs; it must be safe to
// call while the server serves.
type Verifier func(ctx context.Context) ([]isolation.Finding, error)

// verifyTimeout bounds one GET /admin/v1/verify: the checks read the
// catalogs of every tenant schema or database, which takes a while on a
// large deployment, but never forever.
const verifyTimeout = time.Minute

// AdminVerify reports what `bulkhead verify` would. One check runs at a
// time; a request while one runs is told to come back rather than queued.
func (h *handlers) AdminVerify(c echo.Context) error {
	if h.verify == nil {
		return newProblem(http.StatusServiceUnavailable, "this server cannot verify: run bulkhead verify")
	}
	select {
	case h.verifying <- struct{}{}:
		defer func() { <-h.verifying }()
	default:
		p := newProblem(http.StatusTooManyRequests, "a verify is already running; try again shortly")
		p.retryAfter = "5"
		return p
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), verifyTimeout)
	defer cancel()
	findings, err := h.verify(ctx)
	if err != nil {
		return err
	}
	out := VerifyReport{Items: make([]Finding, len(findings)), CheckedAt: time.Now().UTC()}
	for i, f := range findings {
		out.Items[i] = Finding{Code: f.Code, Severity: f.Severity, Object: f.Object, Detail: f.Detail, Fix: f.Fix}
		if f.Severity == isolation.Critical {
			out.Critical++
		}
	}
	return c.JSON(http.StatusOK, out)
}
