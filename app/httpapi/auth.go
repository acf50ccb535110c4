package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Security schemes of openapi.yaml.
const (
	schemeAPIKey = "apiKey"
	schemeAdmin  = "adminToken"
)

// securedRouter registers the generated routes, each behind the
// authentication its operation's security requirement in the spec names (an
// operation without its own inherits the document's: a tenant API key);
// each GET route answers HEAD too. A route the spec does not describe
// cannot be registered: it panics at start, so no route can exist without
// the check its document promises.
type securedRouter struct {
	*echo.Echo
	spec *openapi3.T
	h    *handlers
}

func (r securedRouter) add(method, path string, h echo.HandlerFunc, m []echo.MiddlewareFunc) *echo.Route {
	// echo writes /v1/accounts/:id where OpenAPI writes /v1/accounts/{id}.
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, ":") {
			parts[i] = "{" + p[1:] + "}"
		}
	}
	item := r.spec.Paths.Find(strings.Join(parts, "/"))
	var op *openapi3.Operation
	if item != nil {
		op = item.GetOperation(method)
	}
	if op == nil {
		panic(fmt.Sprintf("httpapi: route %s %s is not in the OpenAPI document", method, path))
	}
	reqs := r.spec.Security
	if op.Security != nil {
		reqs = *op.Security
	}
	switch {
	case len(reqs) == 0:
	case hasScheme(reqs, schemeAdmin):
		m = append([]echo.MiddlewareFunc{r.h.requireAdmin}, m...)
	default:
		m = append([]echo.MiddlewareFunc{r.h.requireKey}, m...)
	}
	if method == http.MethodGet {
		// HEAD for every GET (RFC 9110 §9.3.2): the same handler behind
		// the same checks, so the headers are the GET's; net/http drops
		// the body of an answer to HEAD.
		r.Echo.Add(http.MethodHead, path, h, m...)
	}
	return r.Echo.Add(method, path, h, m...)
}

func (r securedRouter) GET(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodGet, path, h, m)
}

func (r securedRouter) POST(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPost, path, h, m)
}

func (r securedRouter) PUT(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPut, path, h, m)
}

func (r securedRouter) PATCH(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPatch, path, h, m)
}

func (r securedRouter) DELETE(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodDelete, path, h, m)
}

func (r securedRouter) HEAD(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodHead, path, h, m)
}

func (r securedRouter) OPTIONS(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodOptions, path, h, m)
}

func (r securedRouter) CONNECT(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodConnect, path, h, m)
}

func (r securedRouter) TRACE(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodTrace, path, h, m)
}

func hasScheme(reqs openapi3.SecurityRequirements, scheme string) bool {
	for _, r := range reqs {
		if _, ok := r[scheme]; ok {
			return true
		}
	}
	return false
}

func bearer(c echo.Context) (string, bool) {
	v := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// tokenVerifier verifies identity providers' bearer tokens.
type tokenVerifier interface {
	Enabled() bool
	Verify(ctx context.Context, token string) (auth.Identity, error)
}

// requireKey authenticates a tenant API key, or a JWT of a trusted identity
// provider: the key, or the token's issuer and tenant claim, alone decide
// the tenant. A client address that failed to authenticate too often lately
// is refused 429 before its key or token is looked at; a principal whose
// rate limit is spent, 429 after. A viewer may only read. The tenant's
// limit overrides, read with the key or the tenant, go in the request's
// context for the admission Gate.
func (h *handlers) requireKey(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := bearer(c)
		if !ok {
			return auth.ErrUnauthenticated
		}
		if err := h.limits.refuseThrottled(c); err != nil {
			return err
		}
		p, err := h.authenticate(c.Request().Context(), token)
		if errors.Is(err, auth.ErrUnauthenticated) {
			h.limits.failed(c)
		}
		if err != nil {
			return err
		}
		authenticatedAs(c, p.LimitKey())
		if err := h.limits.admit(c, p); err != nil {
			return err
		}
		if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead && !p.CanWrite() {
			if p.KeyID == "" {
				return newProblem(http.StatusForbidden, "this token is read-only (role viewer); writing needs the editor role")
			}
			return newProblem(http.StatusForbidden, "this key is read-only (role viewer); writing needs an editor key")
		}
		ctx := withTenantLimits(auth.WithPrincipal(c.Request().Context(), p), p)
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// authenticate tells a JWT from an API key by its shape and resolves either
// to a principal through the control plane.
func (h *handlers) authenticate(ctx context.Context, token string) (auth.Principal, error) {
	if !auth.IsJWT(token) || h.tokens == nil || !h.tokens.Enabled() {
		return h.control.Authenticate(ctx, token)
	}
	id, err := h.tokens.Verify(ctx, token)
	if err != nil {
		return auth.Principal{}, err
	}
	return h.control.TokenPrincipal(ctx, id)
}

// principal returns the request's principal. Routes behind requireKey
// always have one; anything else fails closed.
func principal(c echo.Context) (auth.Principal, error) {
	p, ok := auth.FromContext(c.Request().Context())
	if !ok {
		return auth.Principal{}, auth.ErrUnauthenticated
	}
	return p, nil
}

// tenantOf returns the tenant the request is bound to, if any, for logs.
func tenantOf(c echo.Context) (isolation.Tenant, bool) {
	p, ok := auth.FromContext(c.Request().Context())
	return p.Tenant, ok
}

// requireAdmin checks the admin token. It compares SHA-256 digests, of
// fixed size, in constant time: comparing the tokens themselves would end
// early on a length mismatch and tell a caller how long the token is. With
// no token configured the admin API does not exist: 404, as for any
// unknown route.
func (h *handlers) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(h.cfg.Admin.Token))
	return func(c echo.Context) error {
		if h.cfg.Admin.Token == "" {
			return echo.ErrNotFound
		}
		if err := h.limits.refuseThrottled(c); err != nil {
			return err
		}
		got, ok := bearer(c)
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			h.limits.failed(c)
			return newProblem(http.StatusUnauthorized, "the admin token is required: Authorization: Bearer <admin token>")
		}
		authenticatedAs(c, "admin")
		c.SetRequest(c.Request().WithContext(control.WithActor(c.Request().Context(), "admin-api")))
		return next(c)
	}
}
