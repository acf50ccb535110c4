package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// problemType is the media type of every error body (RFC 9457).
const problemType = "application/problem+json"

// problem is an error with the HTTP answer it deserves. Handlers return it
// for errors that are the client's; everything else is mapped in one place,
// errorHandler.
type problem struct {
	Status int          `json:"status"`
	Title  string       `json:"title"`
	Detail string       `json:"detail"`
	Type   string       `json:"type"`
	Errors []FieldError `json:"errors,omitempty"`
	// RequestID lets an operator find the request's log line.
	RequestID string `json:"request_id,omitempty"`
	// retryAfter, in seconds, is sent as Retry-After when set.
	retryAfter string
}

func (p *problem) Error() string { return p.Detail }

func newProblem(status int, detail string) *problem {
	return &problem{Status: status, Title: http.StatusText(status), Detail: detail, Type: "about:blank"}
}

// badRequest is a 400 for a malformed parameter or body.
func badRequest(detail string) *problem { return newProblem(http.StatusBadRequest, detail) }

// conflicts words the unique keys and references clients can run into.
var conflicts = map[string]string{
	"accounts_external_id_key": "an account with this provider and external_id already exists",
	"tenants_slug_key":         "a tenant with this slug already exists",
	"budgets_name_key":         "a budget with this name already exists",
	"cost_items_account_fkey":  "the account has cost items, which keep it from being deleted",
	"budgets_account_fkey":     "budgets are scoped to the account: delete them before the account",
	"cost_imports_pkey":        "an import with this Import-Id already exists",
}

// clientErrors are the domain's errors that are the client's to fix, with
// their status; the error's own message, written for clients, is the detail.
var clientErrors = []struct {
	err    error
	status int
}{
	{finops.ErrBadCursor, http.StatusBadRequest},
	{finops.ErrBadRange, http.StatusBadRequest},
	{finops.ErrBadGroupBy, http.StatusBadRequest},
	{finops.ErrBadMetric, http.StatusBadRequest},
	{finops.ErrBadTagFilter, http.StatusBadRequest},
	{finops.ErrBadReplace, http.StatusBadRequest},
	{finops.ErrBadImportID, http.StatusBadRequest},
	{finops.ErrBadIdempotencyKey, http.StatusBadRequest},
	{finops.ErrTooManyCosts, http.StatusRequestEntityTooLarge},
	{finops.ErrIdempotencyConflict, http.StatusConflict},
	{finops.ErrIdempotencyInProgress, http.StatusConflict},
}

// toProblem maps any error a handler returns to the problem the client sees.
// Unknown errors become a 500 whose detail says nothing of the cause; ok is
// false for those, so that the caller logs them.
func toProblem(err error) (p *problem, ok bool) {
	var (
		pe         *problem
		he         *echo.HTTPError
		token      *auth.TokenError
		validation *store.ValidationError
		conflict   *store.ConflictError
		reference  *store.ReferenceError
		invalid    *store.InvalidError
		format     *finops.FormatError
		timeout    *store.TimeoutError
		tooLarge   *finops.TooLargeError
	)
	for _, c := range clientErrors {
		if errors.Is(err, c.err) {
			return newProblem(c.status, c.err.Error()), true
		}
	}
	var param *paramError
	switch {
	case errors.As(err, &pe):
		return pe, true
	case errors.As(err, &param):
		return badRequest(param.detail()), true
	case errors.As(err, &format):
		return badRequest(format.Msg), true
	case errors.As(err, &tooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, tooLarge.Error()), true
	case errors.As(err, &validation):
		p := newProblem(http.StatusUnprocessableEntity, "")
		for _, e := range flatten(err) {
			if errors.As(e, &validation) {
				p.Errors = append(p.Errors, FieldError{Field: validation.Field, Detail: validation.Msg})
			}
		}
		parts := make([]string, len(p.Errors))
		for i, e := range p.Errors {
			parts[i] = e.Field + ": " + e.Detail
		}
		p.Detail = strings.Join(parts, "; ")
		return p, true
	case errors.As(err, &conflict):
		// The store's own words first, then ours; never the constraint's
		// name, which is the schema's, not the API's.
		msg, known := conflicts[conflict.Constraint]
		if conflict.Msg != "" || !known {
			msg = conflict.Error()
		}
		return newProblem(http.StatusConflict, msg), true
	case errors.As(err, &reference):
		return newProblem(http.StatusUnprocessableEntity, reference.Error()), true
	case errors.As(err, &invalid):
		return newProblem(http.StatusUnprocessableEntity, invalid.Error()), true
	case errors.Is(err, store.ErrNotFound):
		return newProblem(http.StatusNotFound, "no such resource"), true
	case errors.As(err, &token):
		return newProblem(http.StatusUnauthorized, token.Error()), true
	case errors.Is(err, auth.ErrUnknownTenant):
		return newProblem(http.StatusUnauthorized, "the token names a tenant that does not exist"), true
	case errors.Is(err, auth.ErrNoRole):
		return newProblem(http.StatusForbidden, "the token grants no role: no role claim, no mapped group, and the issuer has no default role"), true
	case errors.Is(err, auth.ErrUnauthenticated):
		return newProblem(http.StatusUnauthorized, "a valid API key is required: Authorization: Bearer <key>"), true
	case errors.Is(err, auth.ErrSuspended):
		return newProblem(http.StatusForbidden, "the tenant is suspended"), true
	case errors.Is(err, isolation.ErrUnavailable):
		p := newProblem(http.StatusServiceUnavailable, "the tenant's database is busy or unreachable; retry shortly")
		p.retryAfter = "1"
		return p, true
	case errors.Is(err, limits.ErrTenantBusy):
		p := newProblem(http.StatusTooManyRequests, limits.ErrTenantBusy.Error())
		p.retryAfter = "1"
		return p, true
	case errors.Is(err, limits.ErrBusy):
		p := newProblem(http.StatusServiceUnavailable, limits.ErrBusy.Error())
		p.retryAfter = "1"
		return p, true
	case errors.As(err, &timeout):
		return timeoutProblem(timeout), true
	case bodyTimedOut(err):
		return newProblem(http.StatusRequestTimeout, "the request body did not arrive in the time allowed"), true
	case errors.As(err, &he):
		return httpErrorProblem(he), true
	}
	return newProblem(http.StatusInternalServerError, "internal error; the request id identifies it in the server log"), false
}

// timeoutProblem words work the database ended at a bound of its
// transaction: the request ran too long (504) or waited too long for a
// lock another request holds (503); either may be retried.
func timeoutProblem(e *store.TimeoutError) *problem {
	var p *problem
	switch e.Setting {
	case store.LockTimeout:
		p = newProblem(http.StatusServiceUnavailable, "the request waited too long for data another request is changing; retry shortly")
	case store.IdleInTransactionTimeout:
		p = newProblem(http.StatusGatewayTimeout, "the request's transaction stayed idle too long and was ended; nothing was written")
	default:
		p = newProblem(http.StatusGatewayTimeout, "the request took longer than the database allows and was stopped; nothing was written")
	}
	p.retryAfter = "1"
	return p
}

// httpErrorProblem words echo's own errors: unknown routes, wrong methods,
// oversized bodies, unbindable parameters.
func httpErrorProblem(he *echo.HTTPError) *problem {
	detail, _ := he.Message.(string)
	switch he.Code {
	case http.StatusNotFound:
		detail = "no such route"
	case http.StatusMethodNotAllowed:
		detail = "method not allowed on this route"
	case http.StatusRequestEntityTooLarge:
		detail = "the request body exceeds the limit of 10 MiB"
	}
	if detail == "" {
		detail = http.StatusText(he.Code)
	}
	return newProblem(he.Code, detail)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		if _, ok := u.(interface{ Unwrap() []error }); ok {
			return flatten(u)
		}
	}
	return []error{err}
}

// errorHandler writes every error as problem+json. It is echo's
// HTTPErrorHandler.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p, ok := toProblem(err)
		rid := c.Response().Header().Get(echo.HeaderXRequestID)
		p = &problem{Status: p.Status, Title: p.Title, Detail: p.Detail, Type: p.Type, Errors: p.Errors, RequestID: rid, retryAfter: p.retryAfter}
		if !ok && !errors.Is(err, context.Canceled) {
			log.ErrorContext(c.Request().Context(), "request failed", "request_id", rid, "err", err)
		}
		if p.retryAfter != "" {
			c.Response().Header().Set("Retry-After", p.retryAfter)
		}
		if p.Status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="bulkhead"`)
		}
		c.Response().Header().Set(echo.HeaderContentType, problemType)
		c.Response().WriteHeader(p.Status)
		if c.Request().Method == http.MethodHead {
			return
		}
		if err := jsonEncode(c.Response(), p); err != nil {
			log.DebugContext(c.Request().Context(), "write problem", "err", err)
		}
	}
}
