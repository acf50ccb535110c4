package schema_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
	"github.com/bulkheadhq/bulkhead/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a database with schema tenants, each holding rowsPer accounts
// named after its slug.
type fixture struct {
	db       *pgtest.DB
	strategy *schema.Strategy
	app      *pgxpool.Pool // the serving role's
	owner    *pgxpool.Pool // sessions act as the owner role
	pools    *postgres.Pools
	cfg      *config.Config
	tenants  []isolation.Tenant
}

const rowsPer = 3

// options adjust a fixture.
type options struct {
	tenants int
	// app, when set, adjusts the serving pool's configuration.
	app func(*pgxpool.Config)
	// appURL, when set, is the serving pool's DSN instead of the database's.
	appURL string
}

// setup provisions o.tenants (2 when 0) tenants in a fresh database. They
// are deprovisioned when t ends, unless it failed: then the database and
// roles are kept for inspection.
func setup(t testing.TB, o options) *fixture {
	t.Helper()
	return setupOn(t, pgtest.New(t), o)
}

// setupOn is setup on db.
func setupOn(t testing.TB, db *pgtest.DB, o options) *fixture {
	t.Helper()
	if o.tenants == 0 {
		o.tenants = 2
	}
	ctx := context.Background()
	cfg := pgtest.Config(db)
	cfg.Isolation.Strategy = isolation.Schema
	pools, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)
	appURL := db.AppURL
	if o.appURL != "" {
		appURL = o.appURL
	}
	pc, err := postgres.PoolConfig(appURL, cfg.Database.Pooler, 4)
	if err != nil {
		t.Fatal(err)
	}
	if o.app != nil {
		o.app(pc)
	}
	app, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	f := &fixture{db: db, strategy: schema.New(app, pools.Owner), app: app, owner: pools.Owner, pools: pools, cfg: cfg}
	strategytest.CloseAtEnd(t, "the strategy", f.strategy.Close)
	if err := f.strategy.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range o.tenants {
		f.tenants = append(f.tenants, f.provision(t, fmt.Sprintf("tenant-%c", 'a'+i)))
	}
	return f
}

// provision provisions a tenant called slug with rowsPer accounts, and
// deprovisions it when t ends (unless t failed).
func (f *fixture) provision(t testing.TB, slug string) isolation.Tenant {
	t.Helper()
	ctx := context.Background()
	tn, err := f.strategy.Provision(ctx, isolation.Tenant{ID: uuid.New(), Slug: slug, Strategy: isolation.Schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			if err := f.strategy.Deprovision(context.Background(), tn); err != nil {
				t.Errorf("deprovision %s: %v", tn, err)
			}
		}
	})
	err = f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
		for i := range rowsPer {
			if _, err := tx.Exec(ctx,
				`INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', $3, $4)`,
				tn.ID, uuid.New(), fmt.Sprint(i), tn.Slug); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// newControl returns a control plane provisioning with f's strategy.
func newControl(t testing.TB, f *fixture) *control.Service {
	t.Helper()
	return control.New(f.pools, isolation.RegistryOf(f.strategy), f.cfg, pgtest.Logger())
}

func ident(tn isolation.Tenant) string { return pgx.Identifier{schema.Name(tn.ID)}.Sanitize() }

func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

const (
	insufficientPrivilege = "42501"
	undefinedTable        = "42P01"
)

// Provisioning makes a schema and a NOLOGIN role (LOGIN, and the schema
// distributed, on Citus) named from the UUID, the
// schema owned by the owner role and usable by the tenant's role alone, the
// tenant tables owned by the owner with forced RLS, DML granted to the
// tenant's role only, and the migration version recorded in the schema.
func TestProvisionShape(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1})
	ctx := context.Background()
	tn := f.tenants[0]
	name := schema.Name(tn.ID)
	if want := "t_" + fmt.Sprintf("%x", tn.ID[:]); name != want || tn.Placement != name || tn.Strategy != isolation.Schema {
		t.Fatalf("name %q placement %q strategy %q, want %q for both and %q", name, tn.Placement, tn.Strategy, want, isolation.Schema)
	}
	var (
		login, inherit, appMember, appPrivs bool
		schemaOwner                         string
		schemaACL                           []string
	)
	err := f.owner.QueryRow(ctx, `
		SELECT r.rolcanlogin, r.rolinherit,
		       pg_has_role($2, r.oid, 'MEMBER'), pg_has_role($2, r.oid, 'USAGE'),
		       pg_get_userbyid(n.nspowner),
		       (SELECT array_agg(g ORDER BY g) FROM (
		          SELECT COALESCE(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC') || ':' || a.privilege_type AS g
		          FROM aclexplode(n.nspacl) a) x)
		FROM pg_roles r, pg_namespace n WHERE r.rolname = $1 AND n.nspname = $1`,
		name, isolation.AppRole).Scan(&login, &inherit, &appMember, &appPrivs, &schemaOwner, &schemaACL)
	if err != nil {
		t.Fatal(err)
	}
	// On Citus the role must log in on the workers (docs/DESIGN.md).
	if wantLogin := pgtest.Citus(t); login != wantLogin || inherit {
		t.Errorf("tenant role: login %v inherit %v, want login %v and NOINHERIT", login, inherit, wantLogin)
	}
	if pgtest.Citus(t) {
		var distributed bool
		if err := f.owner.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_dist_schema WHERE schemaid = to_regnamespace($1))`, name).Scan(&distributed); err != nil {
			t.Fatal(err)
		}
		if !distributed {
			t.Errorf("schema %s is not a distributed schema", name)
		}
	}
	if !appMember || appPrivs {
		t.Errorf("serving role: member %v, holds privileges %v; want a member without the privileges", appMember, appPrivs)
	}
	if schemaOwner != isolation.OwnerRole {
		t.Errorf("schema owned by %s", schemaOwner)
	}
	wantACL := fmt.Sprintf("[%s:CREATE %s:USAGE %s:USAGE]", isolation.OwnerRole, isolation.OwnerRole, name)
	if got := fmt.Sprint(schemaACL); got != wantACL {
		t.Errorf("schema ACL %s, want %s", got, wantACL)
	}
	rows, err := f.owner.Query(ctx, `
		SELECT c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity, c.relforcerowsecurity,
		       COALESCE((SELECT string_agg(g, ',' ORDER BY g) FROM (
		                   SELECT COALESCE(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC') || ':' || a.privilege_type AS g
		                   FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) x), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`, name)
	if err != nil {
		t.Fatal(err)
	}
	type table struct {
		name, owner     string
		enabled, forced bool
		grants          string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var tb table
		return tb, r.Scan(&tb.name, &tb.owner, &tb.enabled, &tb.forced, &tb.grants)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 2 {
		t.Fatalf("tables of %s: %v", name, tables)
	}
	// Every tenant table: the owner's, RLS forced, DML for the tenant role
	// and nothing for anyone else; the version table: readable by it only.
	dml := fmt.Sprintf("%[1]s:DELETE,%[1]s:INSERT,%[1]s:SELECT,%[1]s:UPDATE", name)
	for _, tb := range tables {
		want := table{tb.name, isolation.OwnerRole, true, true, dml}
		if tb.name == migrations.Tenant.Table {
			want = table{tb.name, isolation.OwnerRole, false, false, name + ":SELECT"}
		}
		if tb != want {
			t.Errorf("table %+v, want %+v", tb, want)
		}
	}
	v, err := isolation.TenantVersion(ctx, f.owner, name)
	if err != nil || v != migrations.Tenant.Head() {
		t.Errorf("version %d (%v), want head %d", v, err, migrations.Tenant.Head())
	}
	// Migrating a schema at head is a no-op that reports head.
	if v, err := f.strategy.Migrate(ctx, tn); err != nil || v != migrations.Tenant.Head() {
		t.Errorf("Migrate at head: %d, %v", v, err)
	}
}

// Inside A's transaction, B's table cannot be read by naming B's schema,
// nor by pointing search_path at it — in both directions. Each attack runs
// in a transaction of its own, since the first error aborts it.
func TestOtherTenantsSchemaIsOutOfReach(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	a, b := f.tenants[0], f.tenants[1]
	for _, dir := range []struct{ self, other isolation.Tenant }{{a, b}, {b, a}} {
		attack := func(name, want string, fn func(tx pgx.Tx) error) {
			t.Helper()
			err := f.strategy.Run(ctx, dir.self, fn)
			if code(err) != want {
				t.Errorf("%s, as %s against %s: got %v, want SQLSTATE %s", name, dir.self.Slug, dir.other.Slug, err, want)
			}
		}
		other := ident(dir.other)
		attack("schema-qualified read", insufficientPrivilege, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM `+other+`.accounts`).Scan(new(int))
		})
		attack("schema-qualified write", insufficientPrivilege, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM `+other+`.accounts`)
			return err
		})
		// A schema the current role may not use drops out of the effective
		// search_path (PostgreSQL skips it silently), so the other tenant's
		// table is not even found by name.
		attack("search_path to the other schema", undefinedTable, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+other); err != nil {
				return err
			}
			var effective []string
			if err := tx.QueryRow(ctx, `SELECT current_schemas(false)`).Scan(&effective); err != nil {
				return err
			}
			if len(effective) != 0 {
				t.Errorf("%s's effective search_path after pointing it at %s: %v", dir.self.Slug, dir.other.Slug, effective)
			}
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(new(int))
		})
		// With a schema the role may use behind it, the name resolves there,
		// and the role holds nothing on the shared tables either.
		attack("search_path to the other schema, then public", insufficientPrivilege, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+other+`, public`); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(new(int))
		})
		// Its own schema, unqualified and qualified, still holds its rows.
		err := f.strategy.Run(ctx, dir.self, func(tx pgx.Tx) error {
			if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != rowsPer {
				t.Errorf("%s sees %d rows, want %d", dir.self.Slug, n, rowsPer)
			}
			if n := pgtest.Count(t, tx, `SELECT count(*) FROM `+ident(dir.self)+`.accounts WHERE name = $1`, dir.self.Slug); n != rowsPer {
				t.Errorf("%s sees %d of its rows qualified, want %d", dir.self.Slug, n, rowsPer)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Outside a tenant transaction the serving role reads no tenant table:
// not qualified, not through its own search_path, not with the tenant
// setting alone, and it holds USAGE on no tenant schema.
func TestServingRoleReadsNoTenantTableUnbound(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	for _, tn := range f.tenants {
		s := ident(tn)
		if _, err := f.app.Exec(ctx, `SELECT count(*) FROM `+s+`.accounts`); code(err) != insufficientPrivilege {
			t.Errorf("unbound qualified read of %s: got %v, want a permission error", tn.Slug, err)
		}
		// Only the RLS half of the binding: the role stays the serving role.
		opts, err := isolation.Bind(tn.ID, isolation.Statement("SET LOCAL search_path = "+s))
		if err != nil {
			t.Fatal(err)
		}
		err = pgx.BeginTxFunc(ctx, f.app, opts, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM `+s+`.accounts`).Scan(new(int))
		})
		if code(err) != insufficientPrivilege {
			t.Errorf("read of %s bound by setting only: got %v, want a permission error", tn.Slug, err)
		}
	}
	if n := pgtest.Count(t, f.app, `
		SELECT count(*) FROM pg_namespace
		WHERE nspname ~ '^t_[0-9a-f]{32}$' AND has_schema_privilege(current_user, oid, 'USAGE')`); n != 0 {
		t.Errorf("the serving role may use %d tenant schemas", n)
	}
	if n := pgtest.Count(t, f.app, `
		SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname ~ '^t_[0-9a-f]{32}$' AND c.relkind = 'r'
		  AND has_table_privilege(current_user, c.oid, 'SELECT, INSERT, UPDATE, DELETE')`); n != 0 {
		t.Errorf("the serving role holds DML on %d tenant tables", n)
	}
}

// Hundreds of interleaved transactions of several tenants over a pool of
// two connections each see only their own tenant's rows, through SQL with
// no tenant filter at all; no connection keeps a tenant's role, schema or
// setting after its transaction. Run directly and through PgBouncer in
// transaction mode.
func TestInterleavedTenantsSeeOnlyTheirOwnRows(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"direct", "pgbouncer"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			o := options{tenants: 4, app: func(c *pgxpool.Config) { c.MaxConns = 2 }}
			if via == "pgbouncer" {
				db := pgtest.New(t)
				o.appURL = pgBouncerURL(t, db)
				o.app = func(c *pgxpool.Config) {
					c.MaxConns = 2
					c.ConnConfig.DefaultQueryExecMode = postgres.ExecMode(config.PoolerPgBouncer)
				}
				f := setupOn(t, db, o)
				interleave(t, f)
				return
			}
			interleave(t, setup(t, o))
		})
	}
}

func interleave(t *testing.T, f *fixture) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		tn := f.tenants[i%len(f.tenants)]
		wg.Go(func() {
			err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `SELECT tenant_id, name FROM accounts`)
				if err != nil {
					return err
				}
				type row struct {
					ID   uuid.UUID
					Name string
				}
				got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
				if err != nil {
					return err
				}
				if len(got) != rowsPer {
					return fmt.Errorf("%s saw %d rows", tn.Slug, len(got))
				}
				for _, r := range got {
					if r.ID != tn.ID || r.Name != tn.Slug {
						return fmt.Errorf("%s saw a row of %s (%s)", tn.Slug, r.Name, r.ID)
					}
				}
				if i%10 == 0 {
					return errRollback
				}
				return nil
			})
			if err != nil && !errors.Is(err, errRollback) {
				errs <- err
			}
		})
	}
	await.Group(t, &wg, "the concurrent tenants' transactions")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every pooled connection is back to the serving role, its default
	// search_path and no tenant.
	var conns []*pgxpool.Conn
	for range 2 {
		c, err := f.app.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		var role, path string
		var setting *string
		if err := c.QueryRow(ctx, `SELECT current_user, current_setting('search_path'), NULLIF(current_setting('app.tenant_id', true), '')`).Scan(&role, &path, &setting); err != nil {
			t.Fatal(err)
		}
		if role != isolation.AppRole || path != `"$user", public` || setting != nil {
			t.Errorf("a pooled connection kept role %s, search_path %s, tenant %v", role, path, setting)
		}
		c.Release()
	}
}

// pgBouncerURL is the serving role's DSN of db through the PgBouncer that
// `withpg -pgbouncer` (and so make test) starts.
func pgBouncerURL(t testing.TB, db *pgtest.DB) string {
	t.Helper()
	raw := os.Getenv("BULKHEAD_TEST_PGBOUNCER_URL")
	if raw == "" {
		t.Fatal("BULKHEAD_TEST_PGBOUNCER_URL is not set: run under `go run ./internal/cmd/withpg -pgbouncer --`")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	app, err := url.Parse(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User, u.Path = app.User, "/"+db.Name
	return u.String()
}

var errRollback = errors.New("rolled back on purpose")

// Binding the tenant — setting, role and search_path — costs no round trip:
// a bound read writes to the network as often as the same read in a plain
// transaction.
func TestBindingRidesInTheBeginRoundTrip(t *testing.T) {
	t.Parallel()
	var writes atomic.Int64
	f := setup(t, options{tenants: 1, app: func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.DialFunc = pgtest.CountingDialer(&writes)
	}})
	ctx := context.Background()
	tn := f.tenants[0]
	read := func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT 1 WHERE $1::uuid IS NOT NULL`, tn.ID).Scan(new(int))
		return err
	}
	measure := func(fn func() error) int64 {
		if err := fn(); err != nil { // warm the statement cache
			t.Fatal(err)
		}
		before := writes.Load()
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		return writes.Load() - before
	}
	bound := measure(func() error {
		return f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			var role string
			if err := tx.QueryRow(ctx, `SELECT current_user`).Scan(&role); err != nil {
				return err
			}
			if role != schema.Name(tn.ID) {
				t.Errorf("bound transaction runs as %s", role)
			}
			return read(tx)
		})
	})
	unbound := measure(func() error {
		return pgx.BeginTxFunc(ctx, f.app, pgx.TxOptions{}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT current_user`).Scan(new(string)); err != nil {
				return err
			}
			return read(tx)
		})
	})
	if bound != unbound || bound != 4 { // BEGIN (with the binding), two queries, COMMIT
		t.Fatalf("bound transaction took %d round trips, unbound %d; want 4 each", bound, unbound)
	}
}

// A one-statement read (isolation.OneRead) takes one round trip, as the
// same statement alone would. Its statement is prepared once per
// connection, inside the first tenant's binding, and then runs for every
// tenant of that connection: each reads its own schema, never the schema
// the statement was prepared in.
func TestOneReadIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	var writes atomic.Int64
	f := setup(t, options{tenants: 2, app: func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.DialFunc = pgtest.CountingDialer(&writes)
	}})
	ctx := context.Background()
	const read = `SELECT name FROM accounts WHERE tenant_id = $1`
	names := func(tn isolation.Tenant) (out []string, trips int64) {
		t.Helper()
		before := writes.Load()
		err := f.strategy.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, read, tn.ID)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", tn, err)
		}
		return out, writes.Load() - before
	}
	for round := range 3 {
		for _, tn := range f.tenants {
			got, trips := names(tn)
			if len(got) != rowsPer || got[0] != tn.Slug || got[rowsPer-1] != tn.Slug {
				t.Fatalf("round %d: %s read %v; want its %d accounts", round, tn.Slug, got, rowsPer)
			}
			if round > 0 && trips != 1 {
				t.Fatalf("round %d: %s's one-statement read took %d round trips; want 1", round, tn.Slug, trips)
			}
		}
	}
	// The statement without the tenant's filter still reads only the
	// tenant's schema: the prepared statement follows the search_path.
	for _, tn := range f.tenants {
		var name string
		err := f.strategy.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT string_agg(DISTINCT name, ',') FROM accounts`).Scan(&name)
		})
		if err != nil || name != tn.Slug {
			t.Fatalf("%s reads accounts of %q (%v); want only its own", tn.Slug, name, err)
		}
	}
}
