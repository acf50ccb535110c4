// Package apitest runs a whole Bulkhead server — the fx app `bulkhead serve`
// builds — over a pgtest database, and speaks HTTP to it, for tests of the
// API and of isolation through it.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/app/logging"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// AdminToken is the admin token of every test server.
const AdminToken = "test-admin-token-0123456789abcdef0123"

// Env is a running server and what it runs on.
type Env struct {
	DB      *pgtest.DB
	URL     string
	Config  *config.Config
	Control *control.Service
	Pools   *postgres.Pools
	// Strategy is what the domain's Gate wraps: the Registry behind the
	// move fence (app/move), or what WithStrategyDecorator made of it.
	Strategy isolation.Runner
	// Registry holds the server's strategies.
	Registry *isolation.Registry
	// Gate is the admission Gate the domain runs tenant work through (it
	// wraps Strategy), and Recorder records its per-tenant usage.
	Gate     *limits.Gate
	Recorder *limits.Recorder
	Client   *http.Client
	// Logs holds the server's log, as JSON lines.
	Logs *Logs
}

// Logs is a log sink safe for concurrent use.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Lines returns the log lines written so far, decoded.
func (l *Logs) Lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Option adjusts the server a test starts: its environment variables, its
// fx graph, or what runs once it serves.
type Option func(*Settings)

// Settings is what Options adjust. Options run in order, after the test's
// database is chosen and before the server is built.
type Settings struct {
	// TB is the test the server is for.
	TB testing.TB
	// DB is the test's database.
	DB *pgtest.DB
	// Env holds the configuration variables the server starts with.
	Env map[string]string
	// Fx are added to the server's fx app, after Base and Server.
	Fx []fx.Option
	// Strategies are registered besides the build's (app.Strategies).
	Strategies []isolation.Descriptor
	// Started run, in order, once the server serves, before Start returns.
	Started []func(tb testing.TB, e *Env)
}

// WithEnv sets one configuration variable, such as
// BULKHEAD_ISOLATION=schema.
func WithEnv(name, value string) Option {
	return func(s *Settings) { s.Env[name] = value }
}

// WithStrategy selects the isolation strategy of new tenants.
func WithStrategy(name string) Option { return WithEnv("BULKHEAD_ISOLATION", name) }

// WithFx adds options to the server's fx app: fx.Decorate, say, to wrap
// what the server is built from.
func WithFx(opts ...fx.Option) Option {
	return func(s *Settings) { s.Fx = append(s.Fx, opts...) }
}

// WithStrategyDecorator wraps the isolation.Runner that the domain (and
// Env.Strategy) runs tenant work through; the control plane keeps the
// undecorated Registry. Tests use it to take a wall away or to inject
// faults.
func WithStrategyDecorator(wrap func(isolation.Runner) isolation.Runner) Option {
	return WithFx(fx.Decorate(wrap))
}

// WithStrategies registers strategies besides the build's, as one more
// line of app.Strategies would: configured from their keys under
// isolation.<name>, served when isolation.strategy names them.
func WithStrategies(d ...isolation.Descriptor) Option {
	return func(s *Settings) { s.Strategies = append(s.Strategies, d...) }
}

// WithStarted runs fn once the server serves, before Start returns: to
// change the database under a server that passed its safety check.
func WithStarted(fn func(tb testing.TB, e *Env)) Option {
	return func(s *Settings) { s.Started = append(s.Started, fn) }
}

// EnvPgBouncer names the superuser DSN, through PgBouncer, of the test
// server's postgres database; `withpg -pgbouncer` (and so `make test`)
// sets it.
const EnvPgBouncer = "BULKHEAD_TEST_PGBOUNCER_URL"

// WithPgBouncer serves through PgBouncer in transaction mode (see
// PgBouncer): the serving DSN (database.url) points at the test's database
// through it, and database.pooler is pgbouncer. Migrations and
// provisioning keep reaching PostgreSQL directly, as database.migrate_url
// must.
func WithPgBouncer() Option {
	return func(s *Settings) {
		s.Env["BULKHEAD_DATABASE_URL"] = PgBouncerURL(s.TB, s.DB)
		s.Env["BULKHEAD_DATABASE__POOLER"] = config.PoolerPgBouncer
	}
}

// PgBouncerURL returns the serving role's DSN of db through PgBouncer
// (see PgBouncer).
func PgBouncerURL(tb testing.TB, db *pgtest.DB) string {
	tb.Helper()
	u, err := url.Parse(PgBouncer(tb))
	if err != nil {
		tb.Fatalf("apitest: PgBouncer DSN: %v", err)
	}
	app, err := url.Parse(db.AppURL)
	if err != nil {
		tb.Fatalf("apitest: serving DSN: %v", err)
	}
	u.User, u.Path = app.User, "/"+db.Name
	return u.String()
}

// Start migrates db (setting up the configured strategy) and serves it on a
// loopback port until tb ends. db may be nil for a fresh one.
func Start(tb testing.TB, db *pgtest.DB, opts ...Option) *Env {
	tb.Helper()
	if db == nil {
		db = pgtest.New(tb)
	}
	vars := map[string]string{
		"BULKHEAD_DATABASE_URL":         db.AppURL,
		"BULKHEAD_MIGRATE_DATABASE_URL": db.MigrateURL,
		"BULKHEAD_HTTP_ADDR":            "127.0.0.1:0",
		"BULKHEAD_ADMIN_TOKEN":          AdminToken,
		"BULKHEAD_TENANTS__BOOTSTRAP":   "",
		"BULKHEAD_SYSTEM__ENABLED":      "true",
		// A first connection to a new tenant database can take seconds on
		// a loaded machine; tests of the timeout itself set their own.
		"BULKHEAD_ISOLATION__DATABASE__ACQUIRE_TIMEOUT": pgtest.AcquireTimeout.String(),
		// Tests hammer one key, and send bad ones on purpose, from one
		// address: the rate limits and the tarpit are on, but out of their
		// way. The tests of the limits set their own.
		"BULKHEAD_LIMITS__RATE__RATE":           "1000000",
		"BULKHEAD_LIMITS__RATE__BURST":          "1000000",
		"BULKHEAD_LIMITS__AUTH_FAILURES__RATE":  "1000000",
		"BULKHEAD_LIMITS__AUTH_FAILURES__BURST": "1000000",
		"BULKHEAD_LIMITS__TARPIT__RATE":         "1000000",
		"BULKHEAD_LIMITS__TARPIT__BURST":        "1000000",
	}
	settings := &Settings{TB: tb, DB: db, Env: vars}
	for _, o := range opts {
		o(settings)
	}
	in := config.Input{Strategies: slices.Concat(app.Strategies, settings.Strategies)}
	for k, v := range vars {
		in.Env = append(in.Env, k+"="+v)
	}
	e := &Env{DB: db, Client: &http.Client{Timeout: 30 * time.Second}, Logs: &Logs{}}
	var srv *httpapi.Server
	a := fx.New(
		app.Base(in), app.Server(),
		fx.Decorate(func(cfg *config.Config) *slog.Logger {
			var w io.Writer = e.Logs
			if os.Getenv("BULKHEAD_TEST_LOG") != "" {
				w = io.MultiWriter(e.Logs, os.Stderr)
			}
			return logging.NewTo(w, "json", cfg.Log.Level)
		}),
		fx.Options(settings.Fx...),
		fx.Populate(&srv, &e.Config, &e.Control, &e.Pools, &e.Strategy, &e.Registry, &e.Gate, &e.Recorder),
	)
	if err := a.Err(); err != nil {
		tb.Fatalf("apitest: build server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.Control.Migrate(ctx, nil); err != nil {
		tb.Fatalf("apitest: migrate: %v", err)
	}
	if err := a.Start(ctx); err != nil {
		tb.Fatalf("apitest: start server: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			tb.Errorf("apitest: stop server: %v", err)
		}
	})
	e.URL = "http://" + srv.Addr()
	for _, fn := range settings.Started {
		fn(tb, e)
	}
	return e
}

// Tenant is a tenant made for a test, with a key of each role.
type Tenant struct {
	control.Tenant
	Editor string
	Viewer string
}

// Tenant provisions a tenant called slug, with an editor and a viewer key.
func (e *Env) Tenant(tb testing.TB, slug string) Tenant {
	tb.Helper()
	ctx := context.Background()
	t, err := e.Control.CreateTenant(ctx, slug, "")
	if err != nil {
		tb.Fatalf("apitest: create tenant %s: %v", slug, err)
	}
	out := Tenant{Tenant: t}
	for _, r := range []auth.Role{auth.Editor, auth.Viewer} {
		k, err := e.Control.CreateKey(ctx, slug, r)
		if err != nil {
			tb.Fatalf("apitest: create key for %s: %v", slug, err)
		}
		if r == auth.Editor {
			out.Editor = k.Key
		} else {
			out.Viewer = k.Key
		}
	}
	return out
}

// Response is an HTTP response, its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing tb when it is not JSON of v's shape.
func (r *Response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("apitest: decode %s: %v", r.Body, err)
	}
}

// Map decodes a JSON object body.
func (r *Response) Map(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	r.JSON(tb, &m)
	return m
}

func (r *Response) String() string { return fmt.Sprintf("%d %s", r.Status, r.Body) }

// Do sends a request with the bearer token key (none when empty). body is
// sent as is when it is a string or []byte, else encoded as JSON; a
// Content-Type of JSON is set unless header sets another.
func (e *Env) Do(tb testing.TB, method, path, key string, body any, header ...string) *Response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			tb.Fatalf("apitest: encode body: %v", err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		tb.Fatalf("apitest: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := e.Client.Do(req)
	if err != nil {
		tb.Fatalf("apitest: %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("apitest: read %s %s: %v", method, path, err)
	}
	return &Response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// Must is Do, failing tb unless the status is want.
func (e *Env) Must(tb testing.TB, want int, method, path, key string, body any, header ...string) *Response {
	tb.Helper()
	r := e.Do(tb, method, path, key, body, header...)
	if r.Status != want {
		tb.Fatalf("%s %s: got %s, want %d", method, path, r, want)
	}
	return r
}

var (
	bouncerMu  sync.Mutex
	bouncerURL string
)

// PgBouncer returns the superuser DSN, through a transaction-mode
// PgBouncer, of the test server's postgres database: EnvPgBouncer's when it
// is set (`make test` sets it), or else that of a PgBouncer this process
// starts in front of the pgtest server — a local cluster trusting local
// connections, as those withpg and pgtest start are — on first use. That
// one runs until pgtest.Main ends the tests (or the process exits:
// PgBouncer dies with its parent on Linux). It fails tb when no PgBouncer
// can be had.
func PgBouncer(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvPgBouncer); u != "" {
		return u
	}
	bouncerMu.Lock()
	defer bouncerMu.Unlock()
	if bouncerURL != "" {
		return bouncerURL
	}
	server, err := url.Parse(pgtest.Server(tb))
	if err != nil {
		tb.Fatalf("apitest: test server DSN: %v", err)
	}
	port, err := strconv.Atoi(server.Port())
	if err != nil || (server.Hostname() != "127.0.0.1" && server.Hostname() != "localhost") {
		tb.Fatalf("apitest: no %s, and the test server %s is not a local cluster to start PgBouncer in front of: run under `go run ./internal/cmd/withpg -pgbouncer --`", EnvPgBouncer, server.Redacted())
	}
	dir, err := os.MkdirTemp("", "bulkhead-apitest-pgbouncer-")
	if err != nil {
		tb.Fatalf("apitest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := pgcluster.StartPgBouncer(ctx, pgcluster.PgBouncerOptions{Dir: filepath.Join(dir, "pgbouncer"), ServerPort: port})
	if err != nil {
		tb.Fatalf("apitest: start PgBouncer (or set %s): %v", EnvPgBouncer, err)
	}
	pgtest.AtExit(func() {
		if err := b.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "apitest:", err)
		}
		_ = os.RemoveAll(dir)
	})
	bouncerURL = b.URL("postgres", "postgres")
	return bouncerURL
}
