package rls_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a database with two tenants, A and B, each with accounts.
type fixture struct {
	db       *pgtest.DB
	strategy *rls.Strategy
	app      *pgxpool.Pool
	a, b     isolation.Tenant
}

// setup returns a fixture whose serving pool holds at most maxConns
// connections (0: the default), each counted by writes when it is not nil.
func setup(t testing.TB, maxConns int32, writes *atomic.Int64) fixture {
	t.Helper()
	db := pgtest.New(t)
	cfg, err := pgxpool.ParseConfig(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if writes != nil {
		cfg.ConnConfig.DialFunc = pgtest.CountingDialer(writes)
	}
	app, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	f := fixture{db: db, strategy: rls.New(app, nil), app: app}
	f.a = isolation.Tenant{ID: uuid.New(), Slug: "tenant-a", Strategy: isolation.RLS}
	f.b = isolation.Tenant{ID: uuid.New(), Slug: "tenant-b", Strategy: isolation.RLS}
	for _, tn := range []isolation.Tenant{f.a, f.b} {
		err := f.strategy.Run(context.Background(), tn, func(tx pgx.Tx) error {
			for i := range 3 {
				if _, err := tx.Exec(context.Background(),
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
	}
	return f
}

func isRLSViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// With no tenant bound, the serving role sees no row and can write none;
// an empty setting behaves the same and raises no cast error.
func TestFailsClosedWithoutTenant(t *testing.T) {
	t.Parallel()
	f := setup(t, 1, nil)
	ctx := context.Background()
	if n := pgtest.Count(t, f.app, `SELECT count(*) FROM accounts`); n != 0 {
		t.Fatalf("unbound read saw %d rows", n)
	}
	_, err := f.app.Exec(ctx, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', 'x', 'x')`, f.a.ID, uuid.New())
	if !isRLSViolation(err) {
		t.Fatalf("unbound insert: got %v, want a row-level security violation", err)
	}
	for _, setting := range []string{`SET app.tenant_id = ''`, `SELECT set_config('app.tenant_id', '', false)`, `RESET app.tenant_id`} {
		if _, err := f.app.Exec(ctx, setting); err != nil {
			t.Fatalf("%s: %v", setting, err)
		}
		if n := pgtest.Count(t, f.app, `SELECT count(*) FROM accounts`); n != 0 {
			t.Fatalf("after %s: read saw %d rows", setting, n)
		}
	}
	// An empty binding is refused before it reaches the database.
	if err := f.strategy.Run(ctx, isolation.Tenant{}, func(pgx.Tx) error { return nil }); !errors.Is(err, isolation.ErrNoTenant) {
		t.Fatalf("Run with no tenant: %v", err)
	}
}

// Inside A's transaction, SQL without any tenant predicate still reaches only
// A's rows; B's rows cannot be read, changed, deleted or written.
func TestBoundTransactionSeesOnlyItsTenant(t *testing.T) {
	t.Parallel()
	f := setup(t, 0, nil)
	ctx := context.Background()
	for _, dir := range []struct{ self, other isolation.Tenant }{{f.a, f.b}, {f.b, f.a}} {
		err := f.strategy.Run(ctx, dir.self, func(tx pgx.Tx) error {
			if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != 3 {
				t.Errorf("%s sees %d rows, want its 3", dir.self.Slug, n)
			}
			if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts WHERE tenant_id = $1`, dir.other.ID); n != 0 {
				t.Errorf("%s sees %d of %s's rows", dir.self.Slug, n, dir.other.Slug)
			}
			for _, sql := range []string{
				`UPDATE accounts SET name = 'pwned' WHERE tenant_id = $1`,
				`DELETE FROM accounts WHERE tenant_id = $1`,
			} {
				tag, err := tx.Exec(ctx, sql, dir.other.ID)
				if err != nil || tag.RowsAffected() != 0 {
					t.Errorf("%s: %s affected %d rows (err %v)", dir.self.Slug, sql, tag.RowsAffected(), err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = f.strategy.Run(ctx, dir.self, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', 'planted', 'x')`, dir.other.ID, uuid.New())
			return err
		})
		if !isRLSViolation(err) {
			t.Errorf("%s planting a row in %s: got %v, want a row-level security violation", dir.self.Slug, dir.other.Slug, err)
		}
		// Nothing of the other tenant changed.
		err = f.strategy.Run(ctx, dir.other, func(tx pgx.Tx) error {
			if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts WHERE name = $1`, dir.other.Slug); n != 3 {
				t.Errorf("%s has %d untouched rows, want 3", dir.other.Slug, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Hundreds of interleaved transactions of two tenants over a pool of two
// connections each see only their own tenant, and no connection keeps a
// tenant after its transaction.
func TestTenantContextNeverOutlivesItsTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t, 2, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		tn := f.a
		if i%2 == 1 {
			tn = f.b
		}
		wg.Go(func() {
			err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `SELECT tenant_id FROM accounts`)
				if err != nil {
					return err
				}
				ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
				if err != nil {
					return err
				}
				if len(ids) != 3 {
					return fmt.Errorf("%s saw %d rows", tn.Slug, len(ids))
				}
				for _, id := range ids {
					if id != tn.ID {
						return fmt.Errorf("%s saw a row of %s", tn.Slug, id)
					}
				}
				if i%10 == 0 {
					return errors.New("rolled back on purpose")
				}
				return nil
			})
			if err != nil && err.Error() != "rolled back on purpose" {
				errs <- err
			}
		})
	}
	await.Group(t, &wg, "the concurrent tenants' transactions")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every pooled connection reads as unbound now.
	conns := make([]*pgxpool.Conn, 0, 2)
	for range 2 {
		c, err := f.app.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		var setting *string
		if err := c.QueryRow(ctx, `SELECT NULLIF(current_setting('app.tenant_id', true), '')`).Scan(&setting); err != nil {
			t.Fatal(err)
		}
		if setting != nil {
			t.Errorf("a pooled connection still carries tenant %s", *setting)
		}
		if n := pgtest.Count(t, c, `SELECT count(*) FROM accounts`); n != 0 {
			t.Errorf("a pooled connection still reads %d rows", n)
		}
		c.Release()
	}
}

// Binding the tenant costs no round trip: a tenant-bound read writes to the
// network as often as the same read in a transaction without tenancy.
func TestBindingRidesInTheBeginRoundTrip(t *testing.T) {
	t.Parallel()
	var writes atomic.Int64
	f := setup(t, 1, &writes)
	ctx := context.Background()
	bound := func() error {
		return f.strategy.Run(ctx, f.a, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, f.a.ID).Scan(new(string))
		})
	}
	unbound := func() error {
		return pgx.BeginTxFunc(ctx, f.app, pgx.TxOptions{}, func(tx pgx.Tx) error {
			err := tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, f.a.ID).Scan(new(string))
			if errors.Is(err, pgx.ErrNoRows) { // no tenant: RLS shows nothing
				err = nil
			}
			return err
		})
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
	// The database-side bounds of a request ride in the same BEGIN.
	limited := isolation.WithBounds(ctx, isolation.Bounds{Statement: 5 * time.Second, Lock: time.Second, IdleInTransaction: 10 * time.Second})
	bounded := func() error {
		return f.strategy.Run(limited, f.a, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, f.a.ID).Scan(new(string))
		})
	}
	b, u, l := measure(bound), measure(unbound), measure(bounded)
	if b != u || l != u {
		t.Fatalf("tenant-bound read took %d round trips, bound and bounded %d, the same read without tenancy %d", b, l, u)
	}
	if b != 3 { // BEGIN (with the binding), the query, COMMIT
		t.Errorf("a bound read took %d round trips, want 3", b)
	}
}

// A tenant-bound read of one statement (isolation.OneRead) takes as many
// round trips as the same statement sent alone, in autocommit and without
// tenancy: one. Directly and in PgBouncer's exec mode; bounded too; and it
// still sees only its tenant's rows, refuses a write and a second
// statement, and leaves its connection outside any transaction.
func TestOneReadIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			f := setup(t, 1, nil)
			var writes atomic.Int64
			cfg, err := pgxpool.ParseConfig(f.db.AppURL)
			if err != nil {
				t.Fatal(err)
			}
			cfg.MaxConns = 1
			cfg.ConnConfig.DialFunc = pgtest.CountingDialer(&writes)
			cfg.ConnConfig.DefaultQueryExecMode = mode
			app, err := pgxpool.NewWithConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(app.Close)
			strategy := rls.New(app, nil)
			ctx := context.Background()
			const read = `SELECT name FROM accounts WHERE tenant_id = $1 ORDER BY id LIMIT 1`
			one := func(ctx context.Context) func() error {
				return func() error {
					return strategy.Run(isolation.OneRead(ctx), f.a, func(tx pgx.Tx) error {
						var name string
						if err := tx.QueryRow(ctx, read, f.a.ID).Scan(&name); err != nil {
							return err
						}
						if name != f.a.Slug {
							return fmt.Errorf("tenant a read %q", name)
						}
						return nil
					})
				}
			}
			alone := func() error {
				err := app.QueryRow(ctx, read, f.a.ID).Scan(new(string))
				if errors.Is(err, pgx.ErrNoRows) { // no tenant: RLS shows nothing
					err = nil
				}
				return err
			}
			measure := func(fn func() error) int64 {
				for range 2 { // warm the statement caches
					if err := fn(); err != nil {
						t.Fatal(err)
					}
				}
				before := writes.Load()
				if err := fn(); err != nil {
					t.Fatal(err)
				}
				return writes.Load() - before
			}
			// A connection's first read of the statement, which prepares
			// it for the next ones, is one round trip too: what a brand-new
			// connection of the database strategy serves. (The strategy's
			// first Run in a process asks whether the database is a Citus
			// coordinator: once, before the connections start afresh.)
			if err := one(ctx)(); err != nil {
				t.Fatal(err)
			}
			app.Reset()
			fresh, err := app.Acquire(ctx) // connected, nothing prepared
			if err != nil {
				t.Fatal(err)
			}
			fresh.Release()
			before := writes.Load()
			if err := one(ctx)(); err != nil {
				t.Fatal(err)
			}
			if n := writes.Load() - before; n != 1 {
				t.Fatalf("a connection's first one-statement read took %d round trips; want 1", n)
			}
			limited := isolation.WithBounds(ctx, isolation.Bounds{Statement: 5 * time.Second, Lock: time.Second, IdleInTransaction: 10 * time.Second})
			o, a, l := measure(one(ctx)), measure(alone), measure(one(limited))
			if o != a || l != a || a != 1 {
				t.Fatalf("a bound one-statement read took %d round trips, bounded %d, the same statement alone %d; want 1 each", o, l, a)
			}

			// The other tenant, through the same connection, sees its own.
			var names []string
			err = strategy.Run(isolation.OneRead(ctx), f.b, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `SELECT name FROM accounts`)
				if err != nil {
					return err
				}
				names, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			})
			if err != nil || len(names) != 3 || names[0] != f.b.Slug || names[2] != f.b.Slug {
				t.Fatalf("tenant b read %v, %v; want its 3 accounts", names, err)
			}
			// A write is refused, and so is a second statement.
			err = strategy.Run(isolation.OneRead(ctx), f.a, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM accounts WHERE tenant_id = $1`, f.a.ID)
				return err
			})
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "25006" { // read_only_sql_transaction
				t.Fatalf("a write in a one-statement read: %v; want a read-only transaction's refusal", err)
			}
			err = strategy.Run(isolation.OneRead(ctx), f.a, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `SELECT 2`)
				return err
			})
			if !errors.Is(err, isolation.ErrNotOneRead) {
				t.Fatalf("a second statement: %v; want ErrNotOneRead", err)
			}
			// The one connection is idle and unbound, and tenant a's rows
			// are all there.
			c, err := app.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Release()
			if st := c.Conn().PgConn().TxStatus(); st != 'I' {
				t.Fatalf("the connection is left in transaction status %c", st)
			}
			var setting *string
			if err := c.QueryRow(ctx, `SELECT NULLIF(current_setting('app.tenant_id', true), '')`).Scan(&setting); err != nil || setting != nil {
				t.Fatalf("the pooled connection carries tenant %v (%v)", setting, err)
			}
			if n := pgtest.Count(t, pgtest.Pool(t, f.db.AdminURL), `SELECT count(*) FROM accounts WHERE tenant_id = $1`, f.a.ID); n != 3 {
				t.Fatalf("tenant a has %d accounts after a refused write; want 3", n)
			}
		})
	}
}

func BenchmarkBinding(b *testing.B) {
	var writes atomic.Int64
	f := setup(b, 1, &writes)
	ctx := context.Background()
	read := func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, f.a.ID).Scan(new(string))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}
	for _, bc := range []struct {
		name string
		run  func() error
	}{
		{"unbound", func() error { return pgx.BeginTxFunc(ctx, f.app, pgx.TxOptions{}, read) }},
		{"bound", func() error { return f.strategy.Run(ctx, f.a, read) }},
		{"set_config", func() error { // the binding as a separate statement, for comparison
			return pgx.BeginTxFunc(ctx, f.app, pgx.TxOptions{}, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, f.a.ID.String()); err != nil {
					return err
				}
				return read(tx)
			})
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if err := bc.run(); err != nil {
				b.Fatal(err)
			}
			start, n := writes.Load(), 0
			for b.Loop() {
				if err := bc.run(); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(writes.Load()-start)/float64(n), "roundtrips/op")
		})
	}
}

// Deleting a tenant removes every row it has in every tenant table, the
// rows that reference others first, so that no foreign key needs deferring
// (Citus does not carry SET CONSTRAINTS ALL DEFERRED to its workers), and
// leaves the other tenant's rows alone.
func TestDeprovisionDeletesReferencingRowsFirst(t *testing.T) {
	t.Parallel()
	f := setup(t, 0, nil)
	ctx := context.Background()
	for _, tn := range []isolation.Tenant{f.a, f.b} {
		err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			for _, q := range []string{
				`INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, currency)
				 SELECT tenant_id, gen_random_uuid(), id, 's', '2025-01-01', 1, 'USD' FROM accounts WHERE tenant_id = $1 RETURNING id`,
				`INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id)
				 SELECT tenant_id, gen_random_uuid(), 'b' || id, 1, 'USD', 'monthly', id FROM accounts WHERE tenant_id = $1 RETURNING id`,
			} {
				if _, err := tx.Exec(ctx, q, tn.ID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("write %s: %v", tn, err)
		}
	}
	pools, err := postgres.Open(pgtest.Config(f.db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)

	if err := rls.New(nil, pools.Owner).Deprovision(ctx, f.a); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Pool(t, f.db.AdminURL)
	for _, table := range []string{"accounts", "cost_items", "budgets"} {
		for tn, want := range map[isolation.Tenant]int{f.a: 0, f.b: 3} {
			if n := pgtest.Count(t, admin, `SELECT count(*) FROM `+table+` WHERE tenant_id = $1`, tn.ID); n != want {
				t.Errorf("%s holds %d rows of %s after deleting %s, want %d", table, n, tn.Slug, f.a.Slug, want)
			}
		}
	}
}

// The temporary-table path is closed at its root: the serving role may not
// create a temporary table, and were it granted TEMPORARY, a temporary
// table named like a tenant table on its pooled session would still not
// capture the next tenant transaction there, whose search_path names
// pg_temp last.
func TestTemporaryTablesCannotShadowTenantTables(t *testing.T) {
	t.Parallel()
	f := setup(t, 1, nil)
	ctx := context.Background()
	const shadow = `CREATE TEMP TABLE accounts (tenant_id uuid, id uuid, provider text, external_id text, name text,
		created_at timestamptz, updated_at timestamptz)`
	if _, err := f.app.Exec(ctx, shadow); !isRLSViolation(err) { // 42501: permission denied
		t.Fatalf("the serving role creates a temporary table: %v", err)
	}

	f.db.Exec(t, `GRANT TEMPORARY ON DATABASE `+pgx.Identifier{f.db.Name}.Sanitize()+` TO `+isolation.AppRole)
	// The pool has one connection: the shadow and the tenant transaction
	// share its session, as two borrowers of a pooled connection do.
	if _, err := f.app.Exec(ctx, shadow); err != nil {
		t.Fatalf("with TEMPORARY granted: %v", err)
	}
	if _, err := f.app.Exec(ctx, `INSERT INTO pg_temp.accounts (tenant_id, id, name) SELECT $1, gen_random_uuid(), 'captured' FROM generate_series(1, 10)`, f.a.ID); err != nil {
		t.Fatal(err)
	}
	var names []string
	err := f.strategy.Run(ctx, f.a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT name FROM accounts WHERE tenant_id = $1`, f.a.ID)
		if err != nil {
			return err
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 3 || names[0] != f.a.Slug {
		t.Fatalf("bound to %s, the query read %v: the temporary table shadowed the tenant table", f.a.Slug, names)
	}
}
