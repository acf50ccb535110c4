package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// handlers implements the generated ServerInterface.
type handlers struct {
	cfg      *config.Config
	log      *slog.Logger
	control  *control.Service
	finops   *finops.Service
	metrics  *Metrics
	recorder *limits.Recorder
	limits   *rateLimits
	spec     []byte
	// verify runs GET /admin/v1/verify; verifying holds a token while one
	// runs (capacity 1).
	verify    Verifier
	verifying chan struct{}
	// tokens verifies identity providers' JWTs; nil accepts API keys only.
	tokens tokenVerifier
	// mover and moves serve POST /admin/v1/tenants/{slug}/move.
	mover Mover
	moves *moves
}

var _ ServerInterface = (*handlers)(nil)

// loadSpec loads the embedded OpenAPI document, keeps its JSON for
// /openapi.json, and returns it for deriving routes' security.
func (h *handlers) loadSpec() (*openapi3.T, error) {
	spec, err := GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load OpenAPI document: %w", err)
	}
	if h.spec, err = json.Marshal(spec); err != nil {
		return nil, fmt.Errorf("encode OpenAPI document: %w", err)
	}
	return spec, nil
}

// Healthz answers while the process runs.
func (h *handlers) Healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, Health{Status: "ok"})
}

// Readyz answers 200 when the database answers and migrations are at head.
func (h *handlers) Readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	degraded, err := h.control.Ready(ctx)
	if err != nil {
		h.log.WarnContext(ctx, "not ready", "err", err)
		// Anyone may ask: the database's own words (host, port, role)
		// stay in the log.
		detail := "the database does not answer; the server log says why"
		var notReady *isolation.NotReadyError
		if errors.As(err, &notReady) {
			detail = notReady.Reason
		}
		return c.JSON(http.StatusServiceUnavailable, Health{Status: "unavailable", Detail: &detail})
	}
	res := Health{Status: "ok"}
	if len(degraded) > 0 {
		d := map[string]string(degraded)
		res.Status, res.Degraded = "degraded", &d
	}
	return c.JSON(http.StatusOK, res)
}

// Metrics serves the Prometheus metrics.
func (h *handlers) Metrics(c echo.Context) error {
	h.metrics.handler.ServeHTTP(c.Response(), c.Request())
	return nil
}

// Openapi serves the OpenAPI document the routes are generated from.
func (h *handlers) Openapi(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, h.spec)
}

// ListIdentityProviders says which issuers a browser client may sign in
// with (those with a console client id), and how: public, nothing secret.
func (h *handlers) ListIdentityProviders(c echo.Context) error {
	items := []IdentityProvider{}
	for _, is := range h.cfg.OIDC.Issuers {
		if is.Console.ClientID == "" {
			continue
		}
		cc := is.Console.Effective(is.Issuer)
		items = append(items, IdentityProvider{
			Name:         cc.Name,
			Issuer:       is.Issuer,
			ClientId:     cc.ClientID,
			Scopes:       cc.Scopes,
			Token:        IdentityProviderToken(cc.Token),
			RedirectPath: config.ConsoleCallbackPath,
		})
	}
	return c.JSON(http.StatusOK, IdentityProviderList{Items: items})
}
