package harness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/app/logging"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
)

// adminToken is the admin token of every server the harness starts.
const adminToken = "bench-admin-token-0123456789abcdef0123"

// server is one `bulkhead serve` fx app running in this process on a
// loopback port, as internal/apitest runs one for tests.
type server struct {
	name       string
	app        *fx.App
	url        string
	control    *control.Service
	strategies *isolation.Registry
	pools      *postgres.Pools
}

// serverOptions configures startServer.
type serverOptions struct {
	name     string
	appURL   string // serving DSN (bulkhead_app)
	ownerURL string // migrate DSN
	strategy string // isolation.strategy of new tenants
	cfg      Config
	log      io.Writer
	// baseline swaps the strategy the domain runs tenant work through for
	// noTenancy: the baseline server.
	baseline bool
	// migrate runs the control plane's Migrate before the server starts,
	// as `bulkhead migrate` would.
	migrate bool
}

// startServer builds and starts the server. The configuration is the saas
// profile's with the sizes of cfg; everything comes from the environment
// list given to config, never from this process's environment.
func startServer(ctx context.Context, o serverOptions) (*server, error) {
	env := map[string]string{
		"BULKHEAD_PROFILE":                              "saas",
		"BULKHEAD_ISOLATION":                            o.strategy,
		"BULKHEAD_DATABASE_URL":                         o.appURL,
		"BULKHEAD_MIGRATE_DATABASE_URL":                 o.ownerURL,
		"BULKHEAD_HTTP_ADDR":                            "127.0.0.1:0",
		"BULKHEAD_ADMIN_TOKEN":                          adminToken,
		"BULKHEAD_LOG_FORMAT":                           "json",
		"BULKHEAD_LOG__LEVEL":                           "warn",
		"BULKHEAD_TENANTS__BOOTSTRAP":                   "",
		"BULKHEAD_SYSTEM__ENABLED":                      "false",
		"BULKHEAD_DATABASE__MAX_CONNECTIONS":            strconv.Itoa(o.cfg.AppConns),
		"BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS": strconv.Itoa(o.cfg.Budget),
		"BULKHEAD_ISOLATION__MIGRATE_PARALLELISM":       strconv.Itoa(o.cfg.MigrateParallelism),
		// What isolation costs is measured without per-key rate limits:
		// the load generator sends far more per key than a client would.
		// Every other load wall keeps its default.
		"BULKHEAD_LIMITS__RATE__RATE": "0",
		// The PostgreSQL server runs on this machine: a heavy tenant may
		// keep half its cores busy while others are served, as the
		// setting's documentation advises.
		"BULKHEAD_LIMITS__CONCURRENCY__HEAVY_PER_TENANT": strconv.Itoa(max(runtime.NumCPU()/2, 1)),
	}
	in := config.Input{}
	for k, v := range env {
		in.Env = append(in.Env, k+"="+v)
	}
	s := &server{name: o.name}
	var srv *httpapi.Server
	opts := []fx.Option{
		app.Base(in), app.Server(),
		fx.Decorate(func(cfg *config.Config) *slog.Logger {
			return logging.NewTo(o.log, "json", cfg.Log.Level)
		}),
		fx.Populate(&srv, &s.control, &s.strategies, &s.pools),
	}
	if o.baseline {
		opts = append(opts, fx.Decorate(func(_ isolation.Runner, strategies *isolation.Registry, pools *postgres.Pools) isolation.Runner {
			return isolation.RegistryOf(&noTenancy{Strategy: strategies.Default(), pool: pools.App})
		}))
	}
	s.app = fx.New(opts...)
	if err := s.app.Err(); err != nil {
		return nil, fmt.Errorf("build %s server: %w", o.name, err)
	}
	if o.migrate {
		if _, err := s.control.Migrate(ctx, nil); err != nil {
			return nil, fmt.Errorf("migrate %s: %w", o.name, err)
		}
	}
	if err := s.app.Start(ctx); err != nil {
		return nil, fmt.Errorf("start %s server: %w", o.name, err)
	}
	s.url = "http://" + srv.Addr()
	return s, nil
}

// stop stops the server and closes its pools.
func (s *server) stop(ctx context.Context) error {
	if err := s.app.Stop(ctx); err != nil {
		return fmt.Errorf("stop %s server: %w", s.name, err)
	}
	return nil
}

// perTenant returns the database strategy of the server, for its pool
// statistics.
func (s *server) perTenant() (*database.Strategy, bool) {
	st, err := s.strategies.Named(isolation.Database)
	if err != nil {
		return nil, false
	}
	db, ok := st.(*database.Strategy)
	return db, ok
}

// noTenancy is the baseline's strategy: Run opens a plain transaction on the
// serving pool, binding nothing, so the only tenant filter left is the
// application's own "tenant_id = $1". The transaction has the same shape as
// the RLS strategy's (one BEGIN message, the statements, COMMIT), so the
// difference measured is what the binding and the policy cost. It exists
// only in the benchmark harness and serves a copy of the RLS database with
// Row-Level Security disabled; nothing in the product can reach it.
// It is the strategy it wraps (the RLS strategy, so that tenants are
// provisioned as they are measured against) but for Run, and runs under
// the Registry's run policy like every strategy.
type noTenancy struct {
	isolation.Strategy
	pool *pgxpool.Pool
}

// Run runs fn in a transaction of the serving pool that carries the bounds
// of ctx (isolation.WithBounds: the server's load walls, not tenancy) and
// no binding, marking a stale plan as every strategy does. It opens the
// transaction as the strategies do (isolation.RunOn), so that under
// isolation.OneRead the BEGIN, the statement and the COMMIT travel in one
// round trip here too: the baseline differs from the RLS strategy by the
// tenancy alone — the binding, the policy and the move fence.
func (b *noTenancy) Run(ctx context.Context, _ isolation.Tenant, fn func(pgx.Tx) error) error {
	bounds, _ := isolation.BoundsFrom(ctx)
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	return isolation.MarkStale(isolation.RunOn(ctx, conn.Conn(), bounds.Steps(), fn))
}
