package httpapi

import (
	"errors"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Allowance is how long one request of a route may take beyond what the
// server allows every request (http.read_timeout, http.write_timeout,
// database.statement_timeout and its siblings): routes that take large
// bodies, such as billing-export imports, need more. Zero fields keep the
// server's.
type Allowance struct {
	// Read is the time from the start of the request to the end of its
	// body; Write the time from the end of its headers to the end of the
	// response.
	Read, Write time.Duration
	// Bounds replace the database bounds of the route's transactions.
	Bounds isolation.Bounds
}

// routeAllowances maps routes, as "METHOD /path" in echo's form
// ("POST /v1/costs"), to their own allowances. Every other route gets the
// server's.
//
// POST /v1/costs loads a FOCUS billing export in one transaction while it
// reads the body: between two batches the session waits for the client's
// next megabytes, idle in its transaction, and a restatement waits for
// another restatement of the same billing period to commit (they are
// serialised by design), so those two bounds are the import's own
// (import.timeout, which also bounds the whole load); statements keep the
// server's. Idempotency keys are tried, never waited for, so a second
// request with a key in use still answers 409 at once. Its read and write deadlines are moved by
// the FOCUS path itself (focusImport.run), only for datasets: a JSON or
// CSV ingest keeps the server's, and reads its body before its transaction.
func routeAllowances(cfg *config.Config) map[string]Allowance {
	return map[string]Allowance{
		http.MethodPost + " /v1/costs": {Bounds: isolation.Bounds{
			Statement:         cfg.Database.StatementTimeout,
			Lock:              max(cfg.Database.LockTimeout, cfg.Import.Timeout),
			IdleInTransaction: max(cfg.Database.IdleInTransactionTimeout, cfg.Import.Timeout),
		}},
	}
}

// allowances gives a request of a route listed in routes that route's
// deadlines: the connection's read and write deadlines, counted from when
// the request reached the handlers (the headers are read by then), and the
// bounds of its transactions. It runs after routing, so c.Path() is the
// route.
func allowances(routes map[string]Allowance) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if len(routes) == 0 {
			return next
		}
		return func(c echo.Context) error {
			a, ok := routes[c.Request().Method+" "+c.Path()]
			if !ok {
				return next(c)
			}
			now := time.Now()
			rc := http.NewResponseController(c.Response())
			if a.Read > 0 {
				if err := rc.SetReadDeadline(now.Add(a.Read)); err != nil {
					return err
				}
			}
			if a.Write > 0 {
				if err := rc.SetWriteDeadline(now.Add(a.Write)); err != nil {
					return err
				}
			}
			if a.Bounds != (isolation.Bounds{}) {
				c.SetRequest(c.Request().WithContext(isolation.WithBounds(c.Request().Context(), a.Bounds)))
			}
			return next(c)
		}
	}
}

// ipExtractor returns how the client's address is found: the peer's, or,
// when the peer is one of the trusted proxies, the address they forward in
// X-Forwarded-For. echo's default would trust any X-Forwarded-For, which a
// client sets at will: an address it chooses could never be throttled.
func ipExtractor(trusted []string) (echo.IPExtractor, error) {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect(), nil
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, cidr := range trusted {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			return nil, config.Errorf("http.trusted_proxies", cidr+" is not a network such as 10.0.0.0/8")
		}
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...), nil
}

// bodyTimedOut reports whether err is a request body that did not arrive
// before the read deadline.
func bodyTimedOut(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
