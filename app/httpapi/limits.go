package httpapi

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/limits"
)

// Rate-limit policies, as the RateLimit-Policy field names them
// (draft-ietf-httpapi-ratelimit-headers).
const (
	policyKey  = "key"
	policyAuth = "auth"
)

// rateLimits are the token buckets of the server: one per API key, and one
// per client address for failed authentications.
type rateLimits struct {
	keys, auth       *limits.Rates
	keyDef, authPol  limits.Policy
	usage            *limits.Usage
	metricRejections func(reason string)
}

func newRateLimits(cfg config.Limits, usage *limits.Usage, reject func(string)) *rateLimits {
	return &rateLimits{
		keys:             limits.NewRates(cfg.Rate.Tracked),
		auth:             limits.NewRates(cfg.AuthFailure.Tracked),
		keyDef:           limits.Policy{Rate: cfg.Rate.Rate, Burst: cfg.Rate.Burst},
		authPol:          limits.Policy{Rate: cfg.AuthFailure.Rate, Burst: cfg.AuthFailure.Burst},
		usage:            usage,
		metricRejections: reject,
	}
}

// keyPolicy is the bucket of each of p's keys: the tenant's overrides, or
// the configured default.
func (r *rateLimits) keyPolicy(p auth.Principal) limits.Policy {
	pol := r.keyDef
	if p.Limits.Rate > 0 {
		pol.Rate = p.Limits.Rate
	}
	if p.Limits.Burst > 0 {
		pol.Burst = p.Limits.Burst
	}
	return pol
}

// rateLimited is a request refused by a token bucket: 429 with
// Retry-After.
func rateLimited(d limits.Decision, detail string) *problem {
	p := newProblem(http.StatusTooManyRequests, detail)
	p.retryAfter = retryAfter(d.RetryAfter)
	return p
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(int(math.Ceil(d.Seconds())), 1))
}

// setRateHeaders writes the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers (structured-field lists): the
// policy's quota q (the burst) over its window w (the seconds an empty
// bucket takes to fill), and what is left: r requests, full again in t
// seconds.
func setRateHeaders(c echo.Context, name string, pol limits.Policy, d limits.Decision) {
	if pol.Unlimited() {
		return
	}
	h := c.Response().Header()
	h.Set("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", name, max(pol.Burst, 1), pol.Window()))
	h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", name, d.Remaining, int(math.Ceil(d.Reset.Seconds()))))
}

// clientAddr is the address failed authentications are counted against:
// the peer's, or with http.trusted_proxies the client's as they forward
// it (echo's IPExtractor, set in New).
func clientAddr(c echo.Context) string {
	return c.RealIP()
}

// refuseThrottled answers 429 when the client address has failed to
// authenticate too often lately: checked before the key is looked up, so
// that a flood of bad keys costs the database nothing.
func (r *rateLimits) refuseThrottled(c echo.Context) error {
	d := r.auth.Peek(clientAddr(c), r.authPol)
	if d.Allowed {
		return nil
	}
	setRateHeaders(c, policyAuth, r.authPol, d)
	r.metricRejections("auth_failures")
	return rateLimited(d, "too many failed authentications from this address; retry later")
}

// failed counts a failed authentication against the client address.
func (r *rateLimits) failed(c echo.Context) {
	r.auth.Take(clientAddr(c), r.authPol)
}

// admit spends one request of p's key and counts it for the tenant's
// statistics; it returns the 429 to answer when the bucket is empty.
func (r *rateLimits) admit(c echo.Context, p auth.Principal) error {
	pol := r.keyPolicy(p)
	d := r.keys.Take(p.LimitKey(), pol)
	setRateHeaders(c, policyKey, pol, d)
	u := limits.Counters{Requests: 1}
	if !d.Allowed {
		u.Rejections = 1
	}
	r.usage.Add(p.Tenant.ID, u)
	if !d.Allowed {
		r.metricRejections("rate_limit")
		return rateLimited(d, "this key's rate limit is spent; retry after the time Retry-After says")
	}
	return nil
}

// withTenantLimits returns ctx carrying p's tenant's concurrency override
// for the admission Gate.
func withTenantLimits(ctx context.Context, p auth.Principal) context.Context {
	if p.Limits.MaxConcurrent <= 0 {
		return ctx
	}
	return limits.WithOverride(ctx, p.Tenant.ID, limits.Override{MaxConcurrent: p.Limits.MaxConcurrent})
}

// AdminTenantStats answers the top tenants over the last minutes, as every
// server process recorded them; this one records its own first.
func (h *handlers) AdminTenantStats(c echo.Context, params AdminTenantStatsParams) error {
	ctx := c.Request().Context()
	minutes, by, limit := 5, "requests", 10
	if params.Minutes != nil {
		minutes = *params.Minutes
	}
	if params.By != nil {
		by = string(*params.By)
	}
	if params.Limit != nil {
		limit = *params.Limit
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := h.recorder.Flush(fctx)
	cancel()
	if err != nil {
		h.log.WarnContext(ctx, "record tenant usage", "err", err)
	}
	st, err := h.control.TenantStats(ctx, minutes, by, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// AdminGetTenantLimits answers a tenant's limit overrides.
func (h *handlers) AdminGetTenantLimits(c echo.Context, slug Slug) error {
	l, err := h.control.TenantLimits(c.Request().Context(), slug)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}

// AdminSetTenantLimits replaces a tenant's limit overrides.
func (h *handlers) AdminSetTenantLimits(c echo.Context, slug Slug) error {
	var body LimitOverrides
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	l, err := h.control.SetTenantLimits(c.Request().Context(), slug, control.Limits{
		MaxConcurrent: body.MaxConcurrent, Rate: body.Rate, Burst: body.Burst,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}
