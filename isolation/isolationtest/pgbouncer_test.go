package isolationtest_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// behindPgBouncer are the strategies that serve through a transaction-mode
// pooler: their tenant binding (SET LOCAL, and for the schema strategy SET
// LOCAL ROLE and search_path) lives and dies with the transaction, which is
// exactly what such a pooler keeps together.
var behindPgBouncer = []string{isolation.RLS, isolation.Schema, isolation.Database}

// The conformance suite passes with the serving DSN through PgBouncer in
// transaction mode, for every strategy.
func TestConformanceBehindPgBouncer(t *testing.T) {
	t.Parallel()
	for _, s := range behindPgBouncer {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			isolationtest.Run(t, s, apitest.WithPgBouncer())
		})
	}
}

// A concurrent mixed-tenant load through PgBouncer shows no leak, no error
// and no lost write, for every strategy; and directly, for comparison.
func TestLoad(t *testing.T) {
	t.Parallel()
	lo := isolationtest.LoadOptions{Tenants: 4, Workers: 4, Rounds: 10}
	if testing.Short() {
		lo.Rounds = 2
	}
	for _, s := range behindPgBouncer {
		t.Run(s+" behind PgBouncer", func(t *testing.T) {
			t.Parallel()
			res := isolationtest.RunLoad(t, s, lo, apitest.WithPgBouncer())
			switch {
			case s == isolation.Database && res.Shared != 0:
				// A server session belongs to one database, which
				// belongs to one tenant.
				t.Errorf("%d server sessions served several tenants of the database strategy", res.Shared)
			case s != isolation.Database && res.Shared == 0:
				t.Errorf("no server session served two tenants: the load did not mix tenants on shared sessions (%d sessions)", res.Backends)
			}
		})
	}
	t.Run("rls direct", func(t *testing.T) {
		t.Parallel()
		isolationtest.RunLoad(t, isolation.RLS, lo)
	})
}

// The negative control for the runs above: through this PgBouncer a
// session-level SET made on one client connection is seen by another
// client connection — so a binding that outlived its transaction would be
// caught — while the strategy's transaction-local binding never is.
func TestPgBouncerHandsSessionStateToOtherClients(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	dsn := apitest.PgBouncerURL(t, db)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = postgres.ExecMode("pgbouncer")
	if seen, err := postgres.DetectPooler(ctx, cfg); err != nil || !seen.Pooled {
		t.Fatalf("DetectPooler through PgBouncer: %+v, %v", seen, err)
	}
	connect := func() *pgx.Conn {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	leaky, bound, other := connect(), connect(), connect()
	setting := func(c *pgx.Conn) string {
		var s string
		if err := c.QueryRow(ctx, `SELECT COALESCE(current_setting('app.tenant_id', true), '')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Session-level: the server session keeps it, and PgBouncer hands that
	// session to the next client (LIFO), whoever it is.
	if _, err := leaky.Exec(ctx, `SET app.tenant_id = 'session-level'`); err != nil {
		t.Fatal(err)
	}
	if got := setting(other); got != "session-level" {
		t.Fatalf("another client sees %q: PgBouncer did not hand over the server session, so this harness could not catch a session-level leak", got)
	}
	if _, err := other.Exec(ctx, `RESET app.tenant_id`); err != nil { // clean the server session
		t.Fatal(err)
	}
	// Transaction-local, as every strategy binds: gone at COMMIT.
	opts, err := isolation.Bind(uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginTxFunc(ctx, bound, opts, func(tx pgx.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*pgx.Conn{other, bound, leaky} {
		if got := setting(c); got != "" {
			t.Errorf("after a bound transaction committed, a client sees tenant %q", got)
		}
	}
}
