package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/limits"
)

// clientKey is the echo context key under which an authenticated request
// records whom its refusals count against.
const clientKey = "bulkhead.client"

// authenticatedAs records that c authenticated as client: an API key's
// or a token's limit key, or the admin.
func authenticatedAs(c echo.Context, client string) { c.Set(clientKey, client) }

func newTarpit(cfg *config.Config) *limits.Tarpit {
	t := cfg.Limits.Tarpit
	return limits.NewTarpit(t.Delay, maxHeld(cfg), limits.Policy{Rate: t.Rate, Burst: t.Burst}, t.Tracked)
}

// maxHeld is how many refusals may be held at once: limits.tarpit.max_held,
// but never more than half of http.max_connections, since each holds its
// connection: a flood of held refusals must not take every connection and
// keep other clients out.
func maxHeld(cfg *config.Config) int {
	return max(min(cfg.Limits.Tarpit.MaxHeld, cfg.HTTP.MaxConnections/2), 1)
}

// tarpit holds the refusals of clients that keep coming back
// (limits.Tarpit). It sees the error a handler, a route's middleware or
// the router (404, 405) returns before it is written, so the answer, when
// it comes, is the one the client would have had at once.
func tarpit(t *limits.Tarpit) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			if err == nil || c.Response().Committed {
				return err
			}
			if client, ok := refused(c, err); ok {
				t.Hold(c.Request().Context(), client)
			}
			return err
		}
	}
}

// refused returns whom a request answered with err counts against, when
// that answer is a refusal the client could have avoided by waiting or by
// asking properly: a 429 of any cause, counted against the API key when
// the request authenticated, or any 4xx to a request that did not
// authenticate, counted against the client's address. An authenticated
// request's other answers (a 409 for an idempotency key in use, a 404)
// are its business, and a 503 is the server's.
func refused(c echo.Context, err error) (string, bool) {
	p, _ := toProblem(err)
	client, authenticated := c.Get(clientKey).(string)
	switch {
	case p.Status == http.StatusTooManyRequests:
	case p.Status >= 400 && p.Status < 500 && !authenticated:
	default:
		return "", false
	}
	if !authenticated {
		client = "addr:" + clientAddr(c)
	}
	return client, true
}
