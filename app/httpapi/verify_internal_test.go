package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// One verify runs at a time: a second request while one runs is told to
// come back (429, Retry-After), not queued.
func TestVerifyOneAtATime(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	h := &handlers{verifying: make(chan struct{}, 1), verify: func(ctx context.Context) ([]isolation.Finding, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []isolation.Finding{{Code: "X", Severity: isolation.Critical}}, nil
	}}
	e := echo.New()
	call := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		c := e.NewContext(httptest.NewRequest(http.MethodGet, "/admin/v1/verify", nil), w)
		if err := h.AdminVerify(c); err != nil {
			p, _ := toProblem(err)
			w.Code = p.Status
			w.Header().Set("Retry-After", p.retryAfter)
		}
		return w
	}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- call() }()
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the first verify did not start within a minute")
	}
	if w := call(); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("a second verify while one runs: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	close(release)
	select {
	case w := <-first:
		if w.Code != http.StatusOK {
			t.Errorf("the first verify: %d %s", w.Code, w.Body)
		}
	case <-time.After(time.Minute):
		t.Fatal("the first verify did not finish within a minute")
	}
}
