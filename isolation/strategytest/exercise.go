// Package strategytest is the contract kit of the isolation seam: Exercise
// holds one isolation.Strategy, on a real PostgreSQL and through the
// Strategy interface alone, to what every strategy must do for the code
// above it — give and take back a tenant's storage, bind every
// transaction of Run to one tenant and fail closed without one, and
// return whatever Run held after a panic or a cancel. Every strategy
// package runs it from its own tests:
//
//	func TestExercise(t *testing.T) {
//		strategytest.Exercise(t, func(t *testing.T) strategytest.Env { … })
//	}
//
// It imports nothing of the application (app/…), so that a strategy can be
// held to the contract without a server; the API attack suite
// (isolationtest) is the second layer, over HTTP.
//
// Every wait has a deadline (internal/await) that fails the test with what
// it waited for; nothing is timed.
package strategytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Env is one strategy under test, as Exercise's factory returns it. Each
// subtest asks for an Env of its own, so that what one subtest does to a
// pool (hold all of it, panic in it) does not meet another's: the factory
// should give each a database, or pools, of its own, closed when its t
// ends.
type Env struct {
	// Strategy is the strategy under test, set up (Setup has run) and
	// serving as the non-owner serving role.
	Strategy isolation.Strategy
	// Admin reads the catalogs and every tenant table of the database the
	// strategy's shared storage is in: a superuser's pool, or the owner's.
	// Exercise only reads with it, to find what is left of a tenant
	// (roles, schemas and databases whose names carry its id, rows with
	// its tenant_id) and to see which statements the server is running.
	Admin *pgxpool.Pool
	// Conns is how many Runs can hold a connection at once: the serving
	// pool's size, or the database strategy's connection budget. Exercise
	// runs Conns+1 panicking Runs one after the other, and holds Conns
	// Runs open at once to look at every connection. It must not be more
	// than the strategy can give (the Runs would wait for each other until
	// the deadline); 1 to 4 keeps the test quick.
	Conns int
}

// Option adjusts Exercise.
type Option func(*options)

type options struct {
	noWalls bool
}

// NoWalls says the strategy binds nothing and walls nothing in the
// database on purpose (the benchmark's no-tenancy baseline, served with
// Row-Level Security disabled): Exercise then leaves out the assertions of
// isolation — Run of the zero tenant, fail-closed binding, unknown
// tenants — says so
// in the log, and filters every read by tenant_id itself. The seam
// assertions still run: provisioning, panic, cancel, retry and
// concurrency.
func NoWalls() Option { return func(o *options) { o.noWalls = true } }

// Exercise runs the seam contract against the strategies newEnv returns,
// one per subtest, in parallel subtests:
//
//   - lifecycle: a second Provision of a tenant either succeeds or fails,
//     and leaves its storage and rows as they were; Deprovision removes
//     every role, schema and database named after the tenant and every row
//     with its id, and a second Deprovision is not an error; the zero
//     tenant is isolation.ErrNoTenant to both;
//   - fail closed: Run of the zero tenant is ErrNoTenant without running
//     fn; inside fn, SQL without a tenant predicate reaches only the bound
//     tenant's rows, and a write naming another tenant's id is refused (in
//     both directions); an unknown tenant's Run fails or sees no row, and
//     creates nothing;
//   - panic: a panic in fn propagates out of Run, and after Conns+1 of
//     them, Conns Runs can hold a connection at once, each clean;
//   - cancel: a ctx cancelled while fn waits in a statement ends Run with
//     the context's error (or the server's query_canceled), ends the
//     statement in the server, commits nothing, and every connection of
//     the pool is clean for the next tenant;
//   - retry: Run runs fn once, whatever fn returns, and a stale plan
//     (an error isolation.StalePlan recognises) comes back wrapped in
//     isolation.ErrStalePlan, nothing committed; under the Registry's
//     run policy (isolation.RegistryOf the strategy) fn runs once more
//     after a stale plan only when isolation.Retryable, commits once, and
//     a stale plan not overcome is isolation.ErrUnavailable;
//   - concurrent tenants: goroutines interleaving Runs of several tenants
//     on one pool each see, and write, their own tenant's rows only.
//
// "Clean" means what a transaction of the tenant sees of its session — its
// role, search_path, tenant setting, timeouts, application_name — is what
// it was before the fault, on every connection of the pool.
//
// The tenant tables are those of the tenant migrations; Exercise writes
// accounts rows as markers. The tenants it provisions are deprovisioned
// when their subtest ends, unless it failed.
func Exercise(t *testing.T, newEnv func(t *testing.T) Env, opts ...Option) {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.noWalls {
		t.Log("NoWalls: the strategy keeps no wall in the database by design; the isolation assertions (Run of the zero tenant, fail-closed binding, unknown tenants) are not run; the seam assertions are")
	}
	k := &kit{newEnv: newEnv, noWalls: o.noWalls}
	t.Run("lifecycle", k.lifecycle)
	if !o.noWalls {
		t.Run("fail closed", k.failClosed)
		t.Run("unknown tenant", k.unknownTenant)
	}
	t.Run("panic returns the connection", k.panics)
	t.Run("cancel mid-transaction", k.cancel)
	t.Run("retry", k.retry)
	t.Run("concurrent tenants", k.concurrent)
}

type kit struct {
	newEnv  func(t *testing.T) Env
	noWalls bool
}

// env returns a fresh Env for t, checked.
func (k *kit) env(t *testing.T) *harness {
	t.Helper()
	e := k.newEnv(t)
	if e.Strategy == nil || e.Admin == nil || e.Conns < 1 {
		t.Fatalf("the factory returned Strategy %v, Admin %v, Conns %d: want all three", e.Strategy, e.Admin, e.Conns)
	}
	return &harness{Env: e, noWalls: k.noWalls}
}

// harness is one subtest's Env with the kit's helpers.
type harness struct {
	Env
	noWalls bool
}

// CloseAtEnd calls closeFn, which closes what a factory opened for an Env
// (a pool, a strategy), when t ends, and fails t if it has not returned
// after await.Deadline. A pgx pool waits in Close for every connection it
// lent, so a connection that a Run kept — the bug Exercise's panic and
// cancel subtests look for — would otherwise hang the test there instead
// of failing it.
func CloseAtEnd(t testing.TB, what string, closeFn func()) {
	t.Helper()
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			closeFn()
		}()
		timer := time.NewTimer(await.Deadline)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			t.Errorf("%s did not close within %s: a connection it lent is still held (a Run kept it?)", what, await.Deadline)
		}
	})
}

// bounded returns a context that ends after await.Deadline: every call
// into the strategy has one, so that a hung call fails instead of hanging.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
	t.Cleanup(cancel)
	return ctx
}

// within runs f in a goroutine and returns its error, or fails t after
// await.Deadline naming what.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	return await.Recv(t, done, what)
}

// run is Strategy.Run of tn, bounded; fn gets the bounded context.
func (h *harness) run(t *testing.T, tn isolation.Tenant, what string, fn func(context.Context, pgx.Tx) error) error {
	t.Helper()
	ctx := bounded(t)
	return within(t, what, func() error {
		return h.Strategy.Run(ctx, tn, func(tx pgx.Tx) error { return fn(ctx, tx) })
	})
}

// provision provisions a new tenant called slug, writes its marker row and
// deprovisions it when t ends, unless t failed.
func (h *harness) provision(t *testing.T, slug string) isolation.Tenant {
	t.Helper()
	ctx := bounded(t)
	in := isolation.Tenant{ID: uuid.New(), Slug: slug}
	var tn isolation.Tenant
	err := within(t, "Provision of "+slug, func() error {
		var err error
		tn, err = h.Strategy.Provision(ctx, in)
		return err
	})
	if err != nil {
		t.Fatalf("Provision %s: %v", slug, err)
	}
	if tn.ID != in.ID || tn.Strategy != h.Strategy.Name() {
		t.Fatalf("Provision %s returned id %s, strategy %q; want id %s, strategy %q", slug, tn.ID, tn.Strategy, in.ID, h.Strategy.Name())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept tenant %s for inspection", tn)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
		defer cancel()
		if err := h.Strategy.Deprovision(ctx, tn); err != nil {
			t.Errorf("Deprovision %s when the test ends: %v", tn, err)
		}
	})
	h.write(t, tn, marker)
	return tn
}

// marker is the external_id of the row every provisioned tenant gets.
const marker = "marker"

// write inserts an accounts row of tn with external_id ext, in a Run.
func (h *harness) write(t *testing.T, tn isolation.Tenant, ext string) {
	t.Helper()
	if err := h.run(t, tn, "a write of "+tn.Slug, func(ctx context.Context, tx pgx.Tx) error { return insert(ctx, tx, tn.ID, ext) }); err != nil {
		t.Fatalf("write %s's %s row: %v", tn.Slug, ext, err)
	}
}

// insert inserts an accounts row of tenant id, named ext, in tx.
func insert(ctx context.Context, tx pgx.Tx, id uuid.UUID, ext string) error {
	_, err := tx.Exec(ctx,
		`INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', $3, 'strategytest')`,
		id, uuid.New(), ext)
	return err
}

// rows returns the external_ids of tn's accounts rows, sorted, read in a
// Run of tn with the application's filter.
func (h *harness) rows(t *testing.T, tn isolation.Tenant) []string {
	t.Helper()
	var out []string
	err := h.run(t, tn, "a read of "+tn.Slug, func(ctx context.Context, tx pgx.Tx) error {
		r, err := tx.Query(ctx, `SELECT external_id FROM accounts WHERE tenant_id = $1 ORDER BY 1`, tn.ID)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(r, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatalf("read %s's rows: %v", tn.Slug, err)
	}
	return out
}

// leftovers lists what the database Admin reaches still holds of tenant
// id: roles, schemas and databases whose name carries the id (in either
// form: with or without its hyphens), and rows with its tenant_id in any
// tenant table Admin can see. The rows are counted in a transaction bound
// to id, so that forced Row-Level Security shows them to an owner too.
func (h *harness) leftovers(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	ctx := bounded(t)
	plain := strings.ReplaceAll(id.String(), "-", "")
	var found []string
	err := within(t, "the catalog search for what is left of "+id.String(), func() error {
		r, err := h.Admin.Query(ctx, `
			SELECT 'database ' || datname FROM pg_database WHERE strpos(datname, $1) > 0 OR strpos(datname, $2) > 0
			UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE strpos(rolname, $1) > 0 OR strpos(rolname, $2) > 0
			UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE strpos(nspname, $1) > 0 OR strpos(nspname, $2) > 0
			ORDER BY 1`, plain, id.String())
		if err != nil {
			return err
		}
		if found, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
			return err
		}
		opts, err := isolation.Bind(id)
		if err != nil {
			return err
		}
		return pgx.BeginTxFunc(ctx, h.Admin, opts, func(tx pgx.Tx) error {
			r, err := tx.Query(ctx, `
				SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
				  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
				  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
				              AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped)
				ORDER BY 1, 2`)
			if err != nil {
				return err
			}
			tables, err := pgx.CollectRows(r, func(r pgx.CollectableRow) (pgx.Identifier, error) {
				var s, n string
				return pgx.Identifier{s, n}, r.Scan(&s, &n)
			})
			if err != nil {
				return err
			}
			if len(tables) == 0 {
				return errors.New("Admin sees no tenant table: it cannot tell whether rows are left")
			}
			for _, tb := range tables {
				var n int
				if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+tb.Sanitize()+` WHERE tenant_id = $1`, id).Scan(&n); err != nil {
					return fmt.Errorf("count rows of %s: %w", tb.Sanitize(), err)
				}
				if n > 0 {
					found = append(found, fmt.Sprintf("%d rows in %s", n, tb.Sanitize()))
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("look for what is left of tenant %s: %v", id, err)
	}
	return found
}

// lifecycle: Provision twice, Deprovision twice, nothing left.
func (k *kit) lifecycle(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	ctx := bounded(t)
	zero := isolation.Tenant{Slug: "zero"}
	if _, err := h.Strategy.Provision(ctx, zero); !errors.Is(err, isolation.ErrNoTenant) {
		t.Errorf("Provision of the zero tenant: %v, want ErrNoTenant", err)
	}
	if err := h.Strategy.Deprovision(ctx, zero); !errors.Is(err, isolation.ErrNoTenant) {
		t.Errorf("Deprovision of the zero tenant: %v, want ErrNoTenant", err)
	}

	tn := h.provision(t, "lifecycle")
	before := h.leftovers(t, tn.ID)
	if len(before) == 0 {
		t.Fatalf("the catalog search finds nothing of %s with its marker row written: it could not find a leftover either", tn)
	}
	t.Logf("%s holds: %s", tn, strings.Join(before, "; "))

	// Provisioning again must not reset, replace or remove the storage:
	// the marker row written after the first is still there.
	var again isolation.Tenant
	err := within(t, "the second Provision", func() error {
		var err error
		again, err = h.Strategy.Provision(ctx, isolation.Tenant{ID: tn.ID, Slug: tn.Slug})
		return err
	})
	if err != nil {
		t.Logf("a second Provision of %s fails: %v", tn, err)
	} else if again.Strategy != tn.Strategy || again.Server != tn.Server || again.Placement != tn.Placement {
		t.Errorf("a second Provision of %s placed it at (%q, %q, %q), the first at (%q, %q, %q)",
			tn, again.Strategy, again.Server, again.Placement, tn.Strategy, tn.Server, tn.Placement)
	}
	if got := h.rows(t, tn); !slices.Equal(got, []string{marker}) {
		t.Errorf("after a second Provision %s holds rows %q, want its marker alone", tn, got)
	}
	if after := h.leftovers(t, tn.ID); !slices.Equal(after, before) {
		t.Errorf("a second Provision changed what %s holds:\nbefore %s\nafter  %s", tn, before, after)
	}

	for i := range 2 {
		if err := within(t, "Deprovision", func() error { return h.Strategy.Deprovision(ctx, tn) }); err != nil {
			t.Fatalf("Deprovision #%d of %s: %v", i+1, tn, err)
		}
		if left := h.leftovers(t, tn.ID); len(left) > 0 {
			t.Errorf("after Deprovision #%d, %s still holds: %s", i+1, tn, strings.Join(left, "; "))
		}
	}
}

// failClosed: the zero tenant, and SQL without a predicate, in both
// directions.
func (k *kit) failClosed(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	ran := false
	err := h.run(t, isolation.Tenant{Slug: "zero"}, "Run of the zero tenant", func(context.Context, pgx.Tx) error { ran = true; return nil })
	if !errors.Is(err, isolation.ErrNoTenant) || ran {
		t.Errorf("Run of the zero tenant: %v, fn run: %t; want ErrNoTenant without running fn", err, ran)
	}

	a, b := h.provision(t, "tenant-a"), h.provision(t, "tenant-b")
	for _, dir := range []struct{ self, other isolation.Tenant }{{a, b}, {b, a}} {
		h.attack(t, dir.self, dir.other)
	}
	for _, tn := range []isolation.Tenant{a, b} {
		if got := h.rows(t, tn); !slices.Equal(got, []string{marker}) {
			t.Errorf("LEAK: after the attacks %s holds rows %q, want its marker alone", tn.Slug, got)
		}
	}
}

// attack runs, in a transaction bound to self, SQL without a tenant
// predicate (it must reach self's rows only, on every tenant table it can
// see) and writes naming other's id (refused).
func (h *harness) attack(t *testing.T, self, other isolation.Tenant) {
	t.Helper()
	errRollback := errors.New("rolled back on purpose")
	err := h.run(t, self, self.Slug+"'s attack", func(ctx context.Context, tx pgx.Tx) error {
		var bound string
		if err := tx.QueryRow(ctx, `SELECT COALESCE(current_setting('`+isolation.Setting+`', true), '')`).Scan(&bound); err != nil {
			return err
		}
		if bound != self.ID.String() {
			t.Errorf("LEAK: %s's transaction is bound to %q", self.Slug, bound)
		}
		tables, err := visibleTenantTables(ctx, tx)
		if err != nil {
			return err
		}
		if !slices.Contains(tables, "accounts") {
			t.Fatalf("tenant tables visible in %s's transaction: %v; want accounts among them", self.Slug, tables)
		}
		for _, table := range tables {
			ident := pgx.Identifier{table}.Sanitize()
			var mine, foreign int
			if err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE tenant_id IN ($1)), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM `+ident, self.ID).Scan(&mine, &foreign); err != nil {
				return fmt.Errorf("count %s: %w", table, err)
			}
			if foreign != 0 {
				t.Errorf("LEAK: SELECT without a tenant predicate on %s in %s's transaction sees %d rows of other tenants", table, self.Slug, foreign)
			}
			if table == "accounts" && mine != 1 {
				t.Errorf("%s's transaction sees %d accounts rows of its own, want its marker", self.Slug, mine)
			}
		}
		for _, w := range []struct{ what, sql string }{
			{"an INSERT of a row with its id", `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, gen_random_uuid(), 'aws', 'planted', 'strategytest')`},
			{"an UPDATE moving the marker to it", `UPDATE accounts SET tenant_id = $1, external_id = 'planted'`},
		} {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			tag, err := sp.Exec(ctx, w.sql, other.ID)
			if err == nil {
				t.Errorf("LEAK: %s in %s's transaction wrote %d rows for %s", w.what, self.Slug, tag.RowsAffected(), other.Slug)
			}
			if err := sp.Rollback(ctx); err != nil {
				return err
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("%s's attack: %v", self.Slug, err)
	}
}

// visibleTenantTables lists the tables with a tenant_id column that the
// transaction's role can read without naming a schema.
func visibleTenantTables(ctx context.Context, tx pgx.Tx) ([]string, error) {
	r, err := tx.Query(ctx, `
		SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bulkhead')
		  AND has_table_privilege(c.oid, 'SELECT')
		  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables: %w", err)
	}
	return pgx.CollectRows(r, pgx.RowTo[string])
}

// unknownTenant: a tenant never provisioned fails or sees nothing, creates
// nothing, and does not disturb a known one.
func (k *kit) unknownTenant(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	known := h.provision(t, "known")
	unknown := isolation.Tenant{ID: uuid.New(), Slug: "unknown", Strategy: h.Strategy.Name()}
	var seen []string
	err := h.run(t, unknown, "Run of an unknown tenant", func(ctx context.Context, tx pgx.Tx) error {
		tables, err := visibleTenantTables(ctx, tx)
		if err != nil {
			return err
		}
		for _, table := range tables {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
				return fmt.Errorf("count %s: %w", table, err)
			}
			if n > 0 {
				seen = append(seen, fmt.Sprintf("%d rows of %s", n, table))
			}
		}
		return nil
	})
	if err != nil {
		t.Logf("Run of a tenant never provisioned fails: %v", err)
	}
	if len(seen) > 0 {
		t.Errorf("LEAK: Run of a tenant never provisioned sees %s", strings.Join(seen, ", "))
	}
	if left := h.leftovers(t, unknown.ID); len(left) > 0 {
		t.Errorf("Run of a tenant never provisioned left: %s", strings.Join(left, "; "))
	}
	if got := h.rows(t, known); !slices.Equal(got, []string{marker}) {
		t.Errorf("after the unknown tenant's Run, %s holds rows %q, want its marker alone", known.Slug, got)
	}
}

// state is what a tenant's transaction sees of its session: what a
// previous borrower of the connection could have left behind.
type state struct {
	User, SearchPath, Tenant, StatementTimeout, LockTimeout, IdleTimeout, AppName, Isolation string
}

const stateQuery = `SELECT current_user, current_setting('search_path'), COALESCE(current_setting('` + isolation.Setting + `', true), ''),
	current_setting('statement_timeout'), current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout'),
	current_setting('application_name'), current_setting('transaction_isolation')`

func readState(ctx context.Context, tx pgx.Tx) (state, error) {
	var s state
	err := tx.QueryRow(ctx, stateQuery).Scan(&s.User, &s.SearchPath, &s.Tenant, &s.StatementTimeout, &s.LockTimeout, &s.IdleTimeout, &s.AppName, &s.Isolation)
	return s, err
}

// dirty changes the session the way a careless fn could: settings set
// without LOCAL outlive the transaction when it commits, and must not
// when it is rolled back.
const dirty = `SET application_name = 'strategytest-dirty'; SET lock_timeout = '17s'; SET search_path = pg_catalog`

// baseline returns what tn's transactions see of their session.
func (h *harness) baseline(t *testing.T, tn isolation.Tenant) state {
	t.Helper()
	var s state
	if err := h.run(t, tn, "a read of "+tn.Slug+"'s session", func(ctx context.Context, tx pgx.Tx) (err error) { s, err = readState(ctx, tx); return err }); err != nil {
		t.Fatalf("read %s's session: %v", tn.Slug, err)
	}
	return s
}

// holdAll holds Conns Runs of tn open at once — so every connection the
// strategy can give is in use, and none can have been kept by an earlier
// fault — and fails t unless each sees want, on a connection of its own.
func (h *harness) holdAll(t *testing.T, tn isolation.Tenant, want state) {
	t.Helper()
	ctx := bounded(t)
	n := h.Conns
	arrived := make(chan int, n)
	release := make(chan struct{})
	var (
		mu     sync.Mutex
		states = map[int]state{}
		wg     sync.WaitGroup
		errs   = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			errs[i] = h.Strategy.Run(ctx, tn, func(tx pgx.Tx) error {
				s, err := readState(ctx, tx)
				if err != nil {
					return err
				}
				var pid int
				if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
					return err
				}
				mu.Lock()
				states[pid] = s
				mu.Unlock()
				arrived <- pid
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		})
	}
	func() {
		defer close(release)
		for i := range n {
			await.Recv(t, arrived, fmt.Sprintf("Run %d of %d of %s to hold a connection at once with the others (a connection kept by an earlier fault would leave one short)", i+1, n, tn.Slug))
		}
	}()
	await.Group(t, &wg, "the Runs holding every connection to end")
	for i, err := range errs {
		if err != nil {
			t.Errorf("Run %d of %d holding every connection of %s: %v", i+1, n, tn.Slug, err)
		}
	}
	if len(states) != n {
		t.Errorf("%d Runs of %s held %d distinct server sessions at once, want %d", n, tn.Slug, len(states), n)
	}
	for pid, s := range states {
		if s != want {
			t.Errorf("LEAK: a session (pid %d) of %s carries what an earlier transaction left:\n got  %+v\n want %+v", pid, tn.Slug, s, want)
		}
	}
}

// errPanic is what the panicking fn panics with.
type errPanic struct{ n int }

// panics: Conns+1 panics, each after a write and a dirty SET, then every
// connection is there and clean, and nothing was committed.
func (k *kit) panics(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	a, b := h.provision(t, "panicking"), h.provision(t, "bystander")
	wantA, wantB := h.baseline(t, a), h.baseline(t, b)
	ctx := bounded(t)
	for i := range h.Conns + 1 {
		var recovered any
		err := within(t, fmt.Sprintf("panicking Run #%d (the earlier ones may have kept their connections)", i+1), func() (err error) {
			defer func() { recovered = recover() }()
			return h.Strategy.Run(ctx, a, func(tx pgx.Tx) error {
				if err := insert(ctx, tx, a.ID, fmt.Sprint("panic-", i)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, dirty); err != nil {
					return err
				}
				panic(errPanic{i})
			})
		})
		if recovered != (errPanic{i}) {
			t.Fatalf("panicking Run #%d: returned %v and recovered %v, want the panic to propagate", i+1, err, recovered)
		}
	}
	if got := h.rows(t, a); !slices.Equal(got, []string{marker}) {
		t.Errorf("after the panics %s holds rows %q, want its marker alone: a panicking transaction committed", a.Slug, got)
	}
	h.holdAll(t, a, wantA)
	h.holdAll(t, b, wantB)
}

// cancel: ctx cancelled while fn waits in pg_sleep.
func (k *kit) cancel(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	a, b := h.provision(t, "cancelled"), h.provision(t, "next")
	wantA, wantB := h.baseline(t, a), h.baseline(t, b)

	tag := "strategytest-sleep-" + uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- h.Strategy.Run(ctx, a, func(tx pgx.Tx) error {
			if err := insert(ctx, tx, a.ID, "cancelled"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, dirty); err != nil {
				return err
			}
			// Long enough never to end by itself: only the cancel ends it.
			_, err := tx.Exec(ctx, `SELECT pg_sleep(3600) /* `+tag+` */`)
			return err
		})
	}()
	h.awaitStatement(t, tag, true, done)
	cancel()
	err := await.Recv(t, done, "Run to return once its context was cancelled mid-statement")
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, context.Canceled):
	case errors.As(err, &pgErr) && pgErr.Code == "57014": // query_canceled: the server's answer to the cancel
	default:
		t.Errorf("Run cancelled mid-statement returned %v, want the context's error or query_canceled", err)
	}
	h.awaitStatement(t, tag, false, nil)
	if got := h.rows(t, a); !slices.Equal(got, []string{marker}) {
		t.Errorf("after the cancel %s holds rows %q, want its marker alone: the cancelled transaction committed", a.Slug, got)
	}
	h.holdAll(t, b, wantB)
	h.holdAll(t, a, wantA)
}

// awaitStatement waits until the server runs a statement containing tag
// (running) or runs none any more (!running), failing t after
// await.Deadline. done, when not nil, is the Run that should be running
// it: its end before the statement is seen fails t.
func (h *harness) awaitStatement(t *testing.T, tag string, running bool, done chan error) {
	t.Helper()
	ctx := bounded(t)
	deadline := time.Now().Add(await.Deadline)
	for {
		var n int
		err := h.Admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()`, tag).Scan(&n)
		if err != nil {
			t.Fatalf("read pg_stat_activity: %v", err)
		}
		if (n > 0) == running {
			return
		}
		if time.Now().After(deadline) {
			if running {
				t.Fatalf("waited %s for the server to run fn's pg_sleep", await.Deadline)
			}
			t.Fatalf("waited %s for the server to end fn's pg_sleep after the cancel: the statement outlives its Run", await.Deadline)
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended before its statement was seen running: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// retry: what Run does when fn fails, retryably or not — the strategy's
// Run alone, and under the Registry's run policy.
func (k *kit) retry(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	tn := h.provision(t, "retried")
	stale := &pgconn.PgError{Severity: "ERROR", Code: "0A000", Message: "cached plan must not change result type (strategytest)"}
	if !isolation.StalePlan(stale) {
		t.Fatal("isolation.StalePlan does not recognise the error the kit stands in for a stale plan with")
	}
	errFixed := errors.New("a plain error of fn (strategytest)")
	registry := isolation.RegistryOf(h.Strategy)

	type outcome int
	const (
		succeeds    outcome = iota // nil, committed once
		fails                      // fn's error, nothing committed
		stalePlan                  // fn's error wrapped in ErrStalePlan, nothing committed
		unavailable                // stalePlan, wrapped in ErrUnavailable too
	)
	for _, c := range []struct {
		name string
		// fail is fn's error on attempt n (from 1), nil for success.
		fail func(n int) error
		// sql, when set, is run by fn instead, and its error is fn's.
		sql string
		// through says how Run is called: the strategy's own, or the
		// Registry's, with or without isolation.Retryable.
		through  string
		attempts int
		want     outcome
	}{
		{name: "stale plan once", fail: func(n int) error {
			if n == 1 {
				return stale
			}
			return nil
		}, through: "strategy", attempts: 1, want: stalePlan},
		{name: "stale plan once", fail: func(n int) error {
			if n == 1 {
				return stale
			}
			return nil
		}, through: "registry, retryable", attempts: 2, want: succeeds},
		{name: "stale plan once", fail: func(n int) error {
			if n == 1 {
				return stale
			}
			return nil
		}, through: "registry", attempts: 1, want: unavailable},
		{name: "stale plan always", fail: func(int) error { return stale }, through: "registry, retryable", attempts: 2, want: unavailable},
		{name: "a plain error", fail: func(int) error { return errFixed }, through: "strategy", attempts: 1, want: fails},
		{name: "a plain error", fail: func(int) error { return errFixed }, through: "registry, retryable", attempts: 1, want: fails},
		{name: "an SQL error", sql: `SELECT 1 / 0`, through: "strategy", attempts: 1, want: fails},
		{name: "an SQL error", sql: `SELECT 1 / 0`, through: "registry, retryable", attempts: 1, want: fails},
	} {
		what := c.name + " through the " + c.through
		ext := "retry " + what
		var attempts atomic.Int32
		fn := func(ctx context.Context, tx pgx.Tx) error {
			n := int(attempts.Add(1))
			if err := insert(ctx, tx, tn.ID, ext); err != nil {
				return err
			}
			if c.sql != "" {
				_, err := tx.Exec(ctx, c.sql)
				return err
			}
			return c.fail(n)
		}
		var err error
		switch c.through {
		case "strategy":
			err = h.run(t, tn, "Run of "+what, fn)
		default:
			var opts []isolation.RunOption
			if c.through == "registry, retryable" {
				opts = append(opts, isolation.Retryable())
			}
			ctx := bounded(t)
			err = within(t, "Registry.Run of "+what, func() error {
				return registry.Run(ctx, tn, func(tx pgx.Tx) error { return fn(ctx, tx) }, opts...)
			})
		}
		n := int(attempts.Load())
		committed := 0
		for _, r := range h.rows(t, tn) {
			if r == ext {
				committed++
			}
		}
		if n != c.attempts {
			t.Errorf("%s: fn ran %d times, want %d (a strategy runs fn once; the Registry runs it again only when Retryable, after a stale plan)", what, n, c.attempts)
		}
		wantCommitted := 0
		if c.want == succeeds {
			wantCommitted = 1
		}
		if committed != wantCommitted {
			t.Errorf("%s: %d rows of fn committed (Run returned %v), want %d", what, committed, err, wantCommitted)
		}
		var pgErr *pgconn.PgError
		switch {
		case c.want == succeeds:
			if err != nil {
				t.Errorf("%s: Run returned %v, want nil", what, err)
			}
		case err == nil:
			t.Errorf("%s: Run returned nil, want fn's error", what)
		case c.sql != "" && (!errors.As(err, &pgErr) || pgErr.Code != "22012"):
			t.Errorf("%s: Run returned %v, want fn's division_by_zero", what, err)
		case c.sql == "" && !errors.Is(err, c.fail(n)):
			t.Errorf("%s: Run returned %v, which does not wrap fn's %v", what, err, c.fail(n))
		case (c.want == stalePlan || c.want == unavailable) && !errors.Is(err, isolation.ErrStalePlan):
			t.Errorf("%s: Run returned %v, want it wrapped in isolation.ErrStalePlan", what, err)
		case (c.want == unavailable) != errors.Is(err, isolation.ErrUnavailable):
			t.Errorf("%s: Run returned %v; wrapped in isolation.ErrUnavailable: %v, want %v", what, err, errors.Is(err, isolation.ErrUnavailable), c.want == unavailable)
		}
		t.Logf("%s: fn ran %d times, Run returned %v", what, n, err)
	}
}

// concurrent: goroutines interleave Runs of several tenants on one pool.
func (k *kit) concurrent(t *testing.T) {
	t.Parallel()
	h := k.env(t)
	const tenants, rounds = 3, 8
	var all []isolation.Tenant
	for i := range tenants {
		all = append(all, h.provision(t, fmt.Sprintf("concurrent-%d", i)))
	}
	workers := max(2*h.Conns, 4)
	ctx := bounded(t)
	var (
		wg     sync.WaitGroup
		writes [tenants]atomic.Int32
	)
	filter := ""
	if h.noWalls {
		filter = " WHERE tenant_id = $1"
	}
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				i := (w + r) % tenants
				tn := all[i]
				ext := fmt.Sprintf("w%d-r%d", w, r)
				err := h.Strategy.Run(ctx, tn, func(tx pgx.Tx) error {
					if !h.noWalls {
						var bound string
						if err := tx.QueryRow(ctx, `SELECT COALESCE(current_setting('`+isolation.Setting+`', true), '')`).Scan(&bound); err != nil {
							return err
						}
						if bound != tn.ID.String() {
							t.Errorf("LEAK: a Run of %s is bound to %q", tn.Slug, bound)
						}
					}
					var args []any
					if filter != "" {
						args = append(args, tn.ID)
					}
					rows, err := tx.Query(ctx, `SELECT tenant_id, external_id FROM accounts`+filter, args...)
					if err != nil {
						return err
					}
					markers := 0
					var id uuid.UUID
					var e string
					if _, err := pgx.ForEachRow(rows, []any{&id, &e}, func() error {
						if id != tn.ID {
							t.Errorf("LEAK: a Run of %s sees a row of %s", tn.Slug, id)
						}
						if e == marker {
							markers++
						}
						return nil
					}); err != nil {
						return err
					}
					if markers != 1 {
						t.Errorf("a Run of %s sees %d marker rows, want 1", tn.Slug, markers)
					}
					return insert(ctx, tx, tn.ID, ext)
				})
				if err != nil {
					t.Errorf("Run of %s by worker %d: %v", tn.Slug, w, err)
					return
				}
				writes[i].Add(1)
			}
		})
	}
	await.Group(t, &wg, fmt.Sprintf("%d workers' interleaved Runs of %d tenants", workers, tenants))
	for i, tn := range all {
		if got, want := len(h.rows(t, tn)), 1+int(writes[i].Load()); got != want {
			t.Errorf("%s holds %d rows after the concurrent Runs, want its marker and its %d writes", tn.Slug, got, want-1)
		}
	}
}
