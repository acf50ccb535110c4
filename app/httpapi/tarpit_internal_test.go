package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// A refusal is a 429 of any cause, counted against the key when the
// request authenticated, or any 4xx to a request that did not,
// counted against its address; nothing else is.
func TestRefusals(t *testing.T) {
	t.Parallel()
	e := echo.New()
	cases := []struct {
		name   string
		client string // the authenticated client, if any
		err    error
		want   string // "" for no refusal
	}{
		{"key over its rate limit", "key:k1", newProblem(http.StatusTooManyRequests, "spent"), "key:k1"},
		{"tenant busy", "key:k1", limits.ErrTenantBusy, "key:k1"},
		{"failed authentications", "", newProblem(http.StatusTooManyRequests, "throttled"), "addr:192.0.2.1"},
		{"no key", "", auth.ErrUnauthenticated, "addr:192.0.2.1"},
		{"made-up method", "", echo.ErrMethodNotAllowed, "addr:192.0.2.1"},
		{"no such route", "", echo.ErrNotFound, "addr:192.0.2.1"},
		{"body too large", "", echo.ErrStatusRequestEntityTooLarge, "addr:192.0.2.1"},
		{"idempotency key in use", "key:k1", finops.ErrIdempotencyInProgress, ""},
		{"authenticated 404", "key:k1", echo.ErrNotFound, ""},
		{"admin's bad request", "admin", badRequest("no"), ""},
		{"server busy", "key:k1", limits.ErrBusy, ""},
		{"server busy, no key", "", isolation.ErrUnavailable, ""},
		{"internal error", "", echo.ErrInternalServerError, ""},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(http.MethodGet, "/v1/accounts", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		c := e.NewContext(req, httptest.NewRecorder())
		if tc.client != "" {
			authenticatedAs(c, tc.client)
		}
		got, ok := refused(c, tc.err)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: refused = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// Held refusals keep their connections, so they may take at most half of
// http.max_connections, whatever limits.tarpit.max_held says.
func TestMaxHeldLeavesConnections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ held, conns, want int }{
		{1024, 1024, 512},
		{10, 1024, 10},
		{1024, 1, 1},
	} {
		cfg := &config.Config{}
		cfg.Limits.Tarpit.MaxHeld, cfg.HTTP.MaxConnections = tc.held, tc.conns
		if got := maxHeld(cfg); got != tc.want {
			t.Errorf("max_held %d, max_connections %d: %d held at most, want %d", tc.held, tc.conns, got, tc.want)
		}
	}
}
