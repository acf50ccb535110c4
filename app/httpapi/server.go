// Package httpapi is Bulkhead's HTTP server: echo, the routes generated from
// openapi.yaml, authentication, problem+json errors, request logs and
// metrics. echo's types stay in this package.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/console"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/internal/jsonkeys"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 10 << 20

// Server is the HTTP server. Start listens synchronously and serves in the
// background; Stop drains in-flight requests.
type Server struct {
	echo *echo.Echo
	cfg  config.HTTP
	ln   *boundedListener
	log  *slog.Logger
	// done is closed once Serve has returned; serveErr is its error,
	// unless it was stopped.
	done     chan struct{}
	serveErr error
	// moves are the tenant moves the admin API runs.
	moves *moves
	// tarpit holds refusals of clients that keep coming back; Stop ends
	// its waits.
	tarpit *limits.Tarpit
}

// Params are the server's dependencies.
type Params struct {
	fx.In

	Config   *config.Config
	Log      *slog.Logger
	Control  *control.Service
	FinOps   *finops.Service
	Metrics  *Metrics
	Usage    *limits.Usage
	Recorder *limits.Recorder
	Gate     *limits.Gate
	// Verify serves GET /admin/v1/verify; without it that answers 503.
	Verify Verifier `optional:"true"`
	// Tokens verifies identity providers' bearer tokens; without it only
	// API keys are accepted.
	Tokens *auth.Verifier `optional:"true"`
	// Mover serves the tenant moves of the admin API.
	Mover Mover `optional:"true"`
}

// New builds the server: middleware, the generated routes, and the
// problem+json error handler.
func New(p Params) (*Server, error) {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(p.Log)
	e.JSONSerializer = serializer{}
	ips, err := ipExtractor(p.Config.HTTP.TrustedProxies)
	if err != nil {
		return nil, err
	}
	e.IPExtractor = ips

	h := &handlers{
		cfg:       p.Config,
		log:       p.Log,
		control:   p.Control,
		finops:    p.FinOps,
		metrics:   p.Metrics,
		recorder:  p.Recorder,
		limits:    newRateLimits(p.Config.Limits, p.Usage, p.Metrics.rejected),
		verify:    p.Verify,
		verifying: make(chan struct{}, 1),
		mover:     p.Mover,
		moves:     newMoves(),
	}
	if p.Tokens != nil {
		h.tokens = p.Tokens
	}
	spec, err := h.loadSpec()
	if err != nil {
		return nil, err
	}
	pit := newTarpit(p.Config)
	e.Use(
		middleware.RequestID(),
		p.Metrics.middleware,
		requestLog(p.Log),
		tarpit(pit),
		middleware.RecoverWithConfig(middleware.RecoverConfig{
			DisableErrorHandler: true, // panics become errors, answered by errorHandler
			LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
				p.Log.ErrorContext(c.Request().Context(), "handler panic",
					"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "err", err, "stack", string(stack))
				return err
			},
		}),
		allowances(routeAllowances(p.Config)),
		middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{
			Limit: fmt.Sprint(MaxBodyBytes/(1<<20)) + "M",
			// Billing exports: the route applies the API's limit to its
			// API formats and import.max_bytes to FOCUS datasets itself.
			Skipper: isImportRoute,
		}),
		middleware.GzipWithConfig(middleware.GzipConfig{
			MinLength: GzipMinLength,
			Skipper:   skipGzip,
		}),
	)
	RegisterHandlers(securedRouter{Echo: e, spec: spec, h: h}, h)
	if err := mountConsole(e, p.Config.OIDC.ConsoleOrigins()); err != nil {
		return nil, err
	}
	s := &Server{echo: e, cfg: p.Config.HTTP, log: p.Log, done: make(chan struct{}), moves: h.moves, tarpit: pit}
	p.Metrics.watch(s, p.Gate)
	return s, nil
}

// GzipMinLength is the smallest answer compressed for a client that
// accepts gzip: below it, compressing costs more than it saves.
const GzipMinLength = 1024

// skipGzip leaves uncompressed what must not or need not be: /metrics
// (promhttp compresses for itself), the web console (embedded static files
// with their own caching), and the versioned single resources, whose
// strong ETag names one encoding of them (RFC 9110 §8.8.3) and which are
// small anyway.
func skipGzip(c echo.Context) bool {
	switch p := c.Path(); {
	case p == "/metrics", strings.HasPrefix(p, console.Prefix):
		return true
	default:
		return versionedRoutes[p]
	}
}

// Handler returns the server's http.Handler, for tests.
func (s *Server) Handler() http.Handler { return s.echo }

// Addr returns the address the server listens on, once started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.cfg.Addr
	}
	return s.ln.Addr().String()
}

// Start listens on the configured address and serves in a goroutine. The
// server's bounds are http.*'s: header, read (the body's deadline), write
// and idle timeouts, the header size, and the cap on open connections.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		// The operator's to fix, so a configuration error (exit 2) naming
		// the key and its variable.
		return config.Errorf("http.addr", s.cfg.Addr+" is already in use by another process: set BULKHEAD_HTTP_ADDR (or http.addr) to a free address")
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = newBoundedListener(ln, s.cfg.MaxConnections)
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ConnState:         s.ln.track,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.echo.Server = srv
	go func() {
		err := srv.Serve(s.ln)
		if !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
		close(s.done)
	}()
	s.log.Info("serving", "addr", ln.Addr().String(), "max_connections", s.cfg.MaxConnections)
	return nil
}

// openConns returns the client connections open, and those closed to make
// room for others or refused at the cap.
func (s *Server) openConns() (open int, shed int64) {
	if s.ln == nil {
		return 0, 0
	}
	return s.ln.open(), s.ln.closed.Load()
}

// Stop stops accepting connections and waits, within ctx, for in-flight
// requests to finish; refusals being held are answered at once. It may be
// called more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.tarpit.Stop()
	if s.ln == nil {
		return nil
	}
	err := s.echo.Server.Shutdown(ctx)
	// The moves the admin API started stop at their step, to be resumed.
	if merr := s.moves.stop(ctx); merr != nil && err == nil {
		err = merr
	}
	<-s.done
	if s.serveErr != nil && err == nil {
		err = s.serveErr
	}
	s.log.Info("stopped serving")
	return err
}

func newServer(lc fx.Lifecycle, p Params) (*Server, error) {
	s, err := New(p)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.Hook{OnStart: s.Start, OnStop: s.Stop})
	return s, nil
}

// Module provides the *Server, listening from start to stop, and its metrics.
var Module = fx.Module("httpapi", fx.Provide(newServer, NewMetrics))

// mountConsole serves the web console under console.Prefix. It is static
// and public — a client of the API like any other, holding no data — so no
// key guards it; the API it calls does. Its policy lets it connect to the
// issuers it signs in with (signIn: their origins), and to no other origin.
func mountConsole(e *echo.Echo, signIn []string) error {
	h, err := console.New(signIn...)
	if err != nil {
		return err
	}
	serve := echo.WrapHandler(h)
	e.GET(console.Prefix+"*", serve)
	e.HEAD(console.Prefix+"*", serve)
	redirect := func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, console.Prefix)
	}
	e.GET(strings.TrimSuffix(console.Prefix, "/"), redirect)
	e.HEAD(strings.TrimSuffix(console.Prefix, "/"), redirect)
	return nil
}

// requestLog logs one line per request, with its request id and, once
// authenticated, its tenant.
func requestLog(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // write the problem now, so its status is logged
			}
			req, res := c.Request(), c.Response()
			attrs := []any{
				"request_id", res.Header().Get(echo.HeaderXRequestID),
				"method", truncate(req.Method, 32), // made-up methods run to kilobytes
				"path", req.URL.Path,
				"route", c.Path(),
				"status", res.Status,
				"bytes", res.Size,
				"duration_ms", float64(time.Since(start).Microseconds()) / 1000,
			}
			if t, ok := tenantOf(c); ok {
				attrs = append(attrs, "tenant_id", t.ID.String(), "tenant", t.Slug)
			}
			log.InfoContext(req.Context(), "request", attrs...)
			return nil
		}
	}
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// decodeJSON decodes a JSON request body into v strictly: the content type
// must be JSON (415), the body well-formed (400), known fields only, each
// once, at any depth (400), and within MaxBodyBytes (413). Numbers stay
// json.Number.
func decodeJSON(c echo.Context, v any) error {
	if err := requireContentType(c, echo.MIMEApplicationJSON); err != nil {
		return err
	}
	body, err := io.ReadAll(c.Request().Body) // within MaxBodyBytes: the body limit
	if err != nil {
		return jsonError(err)
	}
	if err := jsonkeys.Unique(body); err != nil {
		return jsonError(err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body: unexpected data after the JSON value")
	}
	return nil
}

// requireContentType answers 415 unless the request's media type is one of
// want.
func requireContentType(c echo.Context, want ...string) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, w := range want {
			if mt == w {
				return nil
			}
		}
	}
	if ct == "" {
		ct = "none"
	}
	return newProblem(http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %s is not supported here; send %v", ct, want))
}

// jsonError words a JSON decoding error for the client.
func jsonError(err error) error {
	var (
		he     *echo.HTTPError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		dup    *jsonkeys.DuplicateError
	)
	switch {
	case errors.As(err, &he):
		return he // the body limit
	case errors.As(err, &dup):
		return badRequest("body: " + dup.Error() + ": a key may appear once")
	case errors.Is(err, jsonkeys.ErrTooDeep):
		return badRequest("body: " + err.Error())
	case errors.Is(err, io.EOF):
		return badRequest("body: empty; a JSON value is required")
	case errors.As(err, &syntax):
		return badRequest(fmt.Sprintf("body: malformed JSON at byte %d: %s", syntax.Offset, syntax.Error()))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return badRequest(fmt.Sprintf("%s: want a JSON %s, not %s", field, typ.Type.Kind(), typ.Value))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("body: truncated JSON")
	case bodyTimedOut(err):
		return err // 408
	}
	return badRequest("body: " + err.Error())
}

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// serializer is echo's JSON serializer without HTML escaping, decoding with
// json.Number.
type serializer struct{}

func (serializer) Serialize(c echo.Context, i any, indent string) error {
	enc := json.NewEncoder(c.Response())
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(i)
}

func (serializer) Deserialize(c echo.Context, i any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.UseNumber()
	return dec.Decode(i)
}
