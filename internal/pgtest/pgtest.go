// Package pgtest gives every test its own real PostgreSQL database.
//
// The server is the one BULKHEAD_TEST_DATABASE_URL names (a superuser DSN;
// `make test` starts a throwaway cluster and sets it), or else a throwaway
// cluster this process starts on first use and Main stops. Each test's
// database is cloned from a template built once per migration set (keyed by
// the migrations' hash, so concurrent test processes share it), and tests
// connect as the serving role bulkhead_app — not a superuser, not an owner
// — so Row-Level Security is really exercised. The database of a failed
// test is kept for inspection, and its name logged.
//
// When that database has the citus extension, the server is taken for a
// Citus coordinator with its workers registered there (as `withpg -citus`
// starts one): every database is then created, cloned and dropped on the
// coordinator and on every worker alike (see citus.go), and has the citus
// extension and the workers registered.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// EnvURL names the superuser DSN of the server tests use.
const EnvURL = "BULKHEAD_TEST_DATABASE_URL"

// AppPassword is the serving role's password on test servers, for servers
// that do not trust local connections.
const AppPassword = "bulkhead-test"

var (
	once    sync.Once
	admin   *url.URL // superuser DSN, database postgres
	cluster *pgcluster.Cluster
	initErr error
	citus   bool // the server is a Citus coordinator
)

// Main runs the tests of a package, stops the cluster this process
// started, if any, and fails the run when a goroutine started during the
// tests is still running after them (goroutines running before the tests,
// the runtime's and the testing package's, are not counted). Call it from
// TestMain. ignore names goroutines known to outlive the tests; each use
// says why.
func Main(m *testing.M, ignore ...goleak.Option) {
	os.Exit(run(m.Run, func() { runAtExit(); stopCluster() }, os.Stderr, leakGrace, ignore...))
}

var (
	atExitMu sync.Mutex
	atExit   []func()
)

// AtExit has Main call fn after the tests, before it stops its cluster
// and looks for leaked goroutines: for what a package's tests start once
// and share until the end, such as apitest's PgBouncer, whose process
// would otherwise be waited for by a goroutine the check counts as leaked.
// The last registered runs first.
func AtExit(fn func()) {
	atExitMu.Lock()
	defer atExitMu.Unlock()
	atExit = append(atExit, fn)
}

func runAtExit() {
	atExitMu.Lock()
	fns := atExit
	atExit = nil
	atExitMu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// leakGrace bounds how long run waits for goroutines that are on their way
// out (a closed pool's, a stopped server's) to end before it calls them
// leaked: generous, for a loaded machine, and only ever spent on a leak.
const leakGrace = 10 * time.Second

// run runs tests, then after, and turns a passing run into a failing one,
// with the leaked goroutines' stacks on w, when goroutines that were not
// running before tests still are grace after after.
func run(tests func() int, after func(), w io.Writer, grace time.Duration, ignore ...goleak.Option) int {
	// The snapshot is taken before the tests: taken after, it would
	// count every leaked goroutine as one to ignore.
	before := goleak.IgnoreCurrent()
	code := tests()
	after()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(grace)
	for {
		err := goleak.Find(append([]goleak.Option{before}, ignore...)...)
		if err == nil {
			return code
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(w, "pgtest: leaked goroutines:", err)
			return 1
		}
	}
}

func stopCluster() {
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stop cluster:", err)
		}
	}
}

// Server returns the superuser DSN of the test server's postgres database,
// starting a throwaway cluster on first use when EnvURL is not set.
func Server(tb testing.TB) string {
	tb.Helper()
	once.Do(func() { initErr = start() })
	if initErr != nil {
		tb.Fatalf("pgtest: %v", initErr)
	}
	return admin.String()
}

func start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := os.Getenv(EnvURL)
	if dsn == "" {
		dir, err := os.MkdirTemp("", "bulkhead-pgtest-")
		if err != nil {
			return err
		}
		cluster, err = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg")})
		if err != nil {
			return fmt.Errorf("start a throwaway PostgreSQL (or set %s): %w", EnvURL, err)
		}
		dsn = cluster.URL("postgres", "postgres")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return fmt.Errorf("%s: not a URL: %w", EnvURL, err)
	}
	admin = u
	if citus, err = detectCitus(ctx); err != nil {
		return err
	}
	return ensureRoles(ctx)
}

// Citus reports whether the test server is a Citus coordinator, starting
// it as Server does.
func Citus(tb testing.TB) bool {
	tb.Helper()
	Server(tb)
	return citus
}

// ensureRoles creates Bulkhead's roles once per server: they are global to
// the cluster, shared by every test process.
func ensureRoles(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('bulkhead pgtest roles'))`); err != nil {
		return err
	}
	defer conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtext('bulkhead pgtest roles'))`)
	if err := isolation.EnsureRoles(ctx, conn, true); err != nil {
		return err
	}
	if _, err = conn.Exec(ctx, `ALTER ROLE `+isolation.AppRole+` PASSWORD '`+AppPassword+`'`); err != nil {
		return err
	}
	if citus {
		// Roles are created on the workers too: Citus propagates them.
		return isolation.PrepareCitus(ctx, conn)
	}
	return nil
}

// DB is one test's database.
type DB struct {
	Name string
	// AdminURL connects as a superuser: for creating flaws on purpose.
	AdminURL string
	// MigrateURL is the database.migrate_url of the database: a superuser
	// that acts as the owner.
	MigrateURL string
	// AppURL connects as the serving role.
	AppURL string
}

// setupTimeout bounds building the shared template (or Citus base)
// database, waits for another test process's build included: a stalled
// build fails the tests that need it instead of hanging them.
const setupTimeout = 5 * time.Minute

// New returns a fresh database for tb with the control plane and the shared
// tenant tables migrated, cloned from the template for the current
// migrations. It is dropped when tb ends, unless tb failed.
func New(tb testing.TB) *DB {
	tb.Helper()
	Server(tb)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	tpl, err := template(ctx)
	if err != nil {
		tb.Fatalf("pgtest: template: %v", err)
	}
	return create(tb, tpl)
}

// Empty returns a fresh database with nothing migrated, owned by the test
// server's superuser, for tests of migration itself.
func Empty(tb testing.TB) *DB {
	tb.Helper()
	Server(tb)
	if citus {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		base, err := citusBase(ctx)
		if err != nil {
			tb.Fatalf("pgtest: Citus base database: %v", err)
		}
		return create(tb, base)
	}
	return create(tb, "template0")
}

func create(tb testing.TB, tpl string) *DB {
	tb.Helper()
	ctx := context.Background()
	name := "test_" + randomHex(8)
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if err := cloneDatabase(ctx, conn, name, tpl); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	db := &DB{Name: name, AdminURL: dsn(name, "", "")}
	db.MigrateURL = db.AdminURL
	db.AppURL = dsn(name, isolation.AppRole, AppPassword)
	// Database-level grants and settings are not copied from a template.
	if err := prepareDatabase(ctx, db.AdminURL); err != nil {
		tb.Fatalf("pgtest: grant on %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("pgtest: kept database %s for inspection", name)
			return
		}
		conn, err := pgx.Connect(ctx, admin.String())
		if err != nil {
			tb.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if err := dropDatabase(ctx, conn, name); err != nil {
			tb.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return db
}

// cloneDatabase creates database name from tpl, on every node of a Citus
// cluster.
func cloneDatabase(ctx context.Context, conn *pgx.Conn, name, tpl string) error {
	stmt := `CREATE DATABASE ` + pgx.Identifier{name}.Sanitize() + ` TEMPLATE ` + pgx.Identifier{tpl}.Sanitize()
	if citus {
		if err := isolation.OnWorkers(ctx, conn, stmt); err != nil {
			return err
		}
	}
	_, err := conn.Exec(ctx, stmt)
	return err
}

// dropDatabase drops database name, on every node of a Citus cluster.
func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	stmt := `DROP DATABASE IF EXISTS ` + pgx.Identifier{name}.Sanitize() + ` WITH (FORCE)`
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return err
	}
	if citus {
		return isolation.OnWorkers(ctx, conn, stmt)
	}
	return nil
}

// prepareDatabase gives the database dsn names what `bulkhead migrate`
// would: the database-level grants, and on Citus the database's settings.
func prepareDatabase(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := isolation.GrantDatabase(ctx, conn); err != nil {
		return err
	}
	if citus {
		return isolation.PrepareCitus(ctx, conn)
	}
	return nil
}

// dsn is the DSN of database as user (the superuser when user is empty).
func dsn(database, user, password string) string {
	u := *admin
	u.Path = "/" + database
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

var (
	tplMu   sync.Mutex
	tplName string
)

// template returns the name of the template database for the current
// migrations, building it once per server under an advisory lock.
func template(ctx context.Context) (string, error) {
	tplMu.Lock()
	defer tplMu.Unlock()
	if tplName != "" {
		return tplName, nil
	}
	name := "bulkhead_tpl_" + migrations.Control.Hash()[:8] + migrations.Tenant.Hash()[:8]
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, name); err != nil {
		return "", err
	}
	defer conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, name)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		from := "template0"
		if citus {
			if from, err = citusBase(ctx); err != nil {
				return "", err
			}
		}
		building := name + "_build"
		if err := dropDatabase(ctx, conn, building); err != nil {
			return "", err
		}
		if err := cloneDatabase(ctx, conn, building, from); err != nil {
			return "", err
		}
		if err := migrate(ctx, dsn(building, "", "")); err != nil {
			return "", fmt.Errorf("migrate template: %w", err)
		}
		if err := finishTemplate(ctx, conn, building, name); err != nil {
			return "", err
		}
	}
	tplName = name
	return name, nil
}

// finishTemplate renames the database building to name and makes it a
// template, on every node of a Citus cluster.
func finishTemplate(ctx context.Context, conn *pgx.Conn, building, name string) error {
	if citus {
		return finishCitusTemplate(ctx, conn, building, name)
	}
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{building}.Sanitize()+` RENAME TO `+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` WITH IS_TEMPLATE true`)
	return err
}

// migrate runs what `bulkhead migrate` runs on the database dsn names.
func migrate(ctx context.Context, dsn string) error {
	cfg := Config(&DB{MigrateURL: dsn})
	pools, err := postgres.Open(cfg)
	if err != nil {
		return err
	}
	defer pools.Close()
	strategies, err := isolation.NewRegistry(isolation.RLS, rls.New(nil, pools.Owner))
	if err != nil {
		return err
	}
	svc := control.New(pools, strategies, cfg, Logger())
	_, err = svc.Migrate(ctx, nil)
	return err
}

// Config returns a valid configuration for db: the community profile with
// db's serving and migrate URLs, no bootstrap tenant, the system role on.
// It knows the rls strategy only (this package cannot import the others'
// packages, whose own tests use it); a server with every strategy is
// apitest's.
func Config(db *DB) *config.Config {
	l, err := config.Load(config.Input{Strategies: []isolation.Descriptor{rls.Descriptor}})
	if err != nil {
		panic(err)
	}
	cfg := l.Config
	cfg.Database.URL = db.AppURL
	cfg.Database.MigrateURL = db.MigrateURL
	cfg.Tenants.Bootstrap = ""
	cfg.System.Enabled = true
	cfg.HTTP.Addr = "127.0.0.1:0"
	// Tests pair it with strategies of their own (the schema strategy's
	// control plane): no isolation.allowed list, which allows every one
	// (config.Config.Allows), rather than the rls Load knew of.
	cfg.Isolation.Allowed = nil
	return cfg
}

// AcquireTimeout is how long the database strategy waits for a tenant
// connection in tests (apitest sets it), unless a test sets its own: a
// first connection to a new tenant database can take seconds on a loaded
// machine, and the default (2s) is for serving.
const AcquireTimeout = 30 * time.Second

// Logger returns a logger for tests: silent unless BULKHEAD_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("BULKHEAD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Pool opens a pool on dsn for tb, closed when tb ends.
func Pool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("pgtest: pool: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Exec runs sql as the superuser on db, failing tb on error: for creating
// flaws and fixtures the serving role may not.
func (db *DB) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Foreign is the lc_messages Translated sets: a language other than English
// whose PostgreSQL translations Debian ships.
const Foreign = "de_DE.UTF-8"

// Translated sets lc_messages to Foreign on db, so that sessions opened
// afterwards report errors in German: for tests that code classifies
// errors by SQLSTATE and names, not by message text. lc_messages is a
// superuser's setting, so it is the database's default, not the session's.
// The locale must exist where the server runs (scripts/install-deps.sh
// generates it).
func (db *DB) Translated(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` SET lc_messages TO '`+Foreign+`'`); err != nil {
		tb.Fatalf("pgtest: set lc_messages to %s (scripts/install-deps.sh generates the locale): %v", Foreign, err)
	}
}
