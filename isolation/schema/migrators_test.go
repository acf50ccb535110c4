package schema_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// countDials dials like pgx does by default and counts the connections
// made: each is a backend started.
func countDials(n *atomic.Int64) pgconn.DialFunc {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, network, addr)
	}
}

// countingStrategy is a schema strategy on f's database migrating
// parallelism tenants at once, whose owner pool (at most ownerConns
// connections) and migration sessions are dialled through countDials(dials).
// Both are closed when t ends.
func countingStrategy(t *testing.T, f *fixture, parallelism int, dials *atomic.Int64) *schema.Strategy {
	t.Helper()
	pc := f.owner.Config().Copy()
	pc.MaxConns = ownerConns
	pc.ConnConfig.DialFunc = countDials(dials)
	owner, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	strategytest.CloseAtEnd(t, "the counting owner pool", owner.Close)
	s := schema.New(nil, owner, isolation.WithMigrateParallelism(parallelism))
	strategytest.CloseAtEnd(t, "the counting strategy", s.Close)
	return s
}

const ownerConns = 2

// layout returns, for every schema of f's database but the system's, its
// relations and, where it has the tenant migrations' version table, the
// versions recorded there in the order they were: what a migration may
// change, everywhere it could.
func layout(t *testing.T, f *fixture) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := f.owner.Query(ctx, `
		SELECT n.nspname, coalesce(string_agg(c.relname, ',' ORDER BY c.relname), ''),
		       bool_or(c.relname = $1 AND c.relkind = 'r')
		FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
		WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
		GROUP BY 1`, migrations.Tenant.Table)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		schema, rels string
		versions     *bool
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.schema, &x.rels, &x.versions)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, x := range all {
		out[x.schema] = x.rels
		if x.versions == nil || !*x.versions {
			continue
		}
		var v string
		table := pgx.Identifier{x.schema, migrations.Tenant.Table}.Sanitize()
		if err := f.owner.QueryRow(ctx, `SELECT string_agg(version_id::text, ',' ORDER BY id) FROM `+table).Scan(&v); err != nil {
			t.Fatal(err)
		}
		out[x.schema] += " | " + v
	}
	return out
}

// allVersions is what the version table of a schema migrated once from 0
// to head records: every version once, in order.
func allVersions() string {
	var v []string
	for i := range migrations.Tenant.Head() + 1 {
		v = append(v, fmt.Sprint(i))
	}
	return strings.Join(v, ",")
}

// bulkhead migrate's many schema tenants, parallelism at a time, start a
// backend per concurrent migrator, not per tenant: the owner sessions are
// kept from one schema to the next. Each migration lands in its own schema
// and nowhere else, every version once, and the tenants serve afterwards.
// Migrators of one schema still wait for each other: the same tenant,
// given to every worker at once, is migrated once.
func TestMigratingManySchemasReusesOwnerSessions(t *testing.T) {
	t.Parallel()
	const n, parallelism = 9, 3
	f := setup(t, options{tenants: n + 1})
	ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
	defer cancel()
	reference, tenants := f.tenants[0], f.tenants[1:] // reference stays at head
	for _, tn := range tenants {
		migrateTo(t, f, tn, 0, nil)
	}
	before := layout(t, f)
	var dials atomic.Int64
	s := countingStrategy(t, f, parallelism, &dials)

	// The first tenant to every worker at once, then the others.
	work := make(chan isolation.Tenant, n+parallelism)
	for range parallelism {
		work <- tenants[0]
	}
	for _, tn := range tenants[1:] {
		work <- tn
	}
	close(work)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for range parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tn := range work {
				v, err := s.Migrate(ctx, tn)
				if err == nil && v != migrations.Tenant.Head() {
					err = fmt.Errorf("reached version %d", v)
				}
				if err != nil {
					mu.Lock()
					failed = append(failed, fmt.Errorf("%s: %w", tn.Slug, err))
					mu.Unlock()
				}
			}
		}()
	}
	await.Group(t, &wg, "the migrating workers")
	if err := errors.Join(failed...); err != nil {
		t.Fatal(err)
	}

	// Backends: the owner pool's and one per worker, however many tenants.
	stats := s.MigratorStats()
	if got := dials.Load(); got > ownerConns+parallelism {
		t.Errorf("migrating %d schemas (%d runs) %d at a time started %d backends, want at most %d (owner pool) + %d (migrators); migrators: %+v",
			n, n+parallelism-1, parallelism, got, ownerConns, parallelism, stats)
	}
	if stats.Connects > parallelism || stats.Reused < int64(n-parallelism) || stats.Discarded != 0 || stats.Busy != 0 || stats.Idle > parallelism {
		t.Errorf("migrators: %+v", stats)
	}

	after := layout(t, f)
	want := before[schema.Name(reference.ID)]
	for name, was := range before {
		if name == schema.Name(reference.ID) || !strings.HasPrefix(name, "t_") {
			if after[name] != was {
				t.Errorf("schema %s changed: %q, was %q", name, after[name], was)
			}
		}
	}
	if len(after) != len(before) {
		t.Errorf("schemas after: %v, before: %v", after, before)
	}
	if !strings.HasSuffix(want, " | "+allVersions()) {
		t.Fatalf("reference tenant's schema: %q", want)
	}
	store := finops.New(isolation.RegistryOf(f.strategy))
	for _, tn := range tenants {
		if got := after[schema.Name(tn.ID)]; got != want {
			t.Errorf("%s's schema after migrating: %q, want %q", tn.Slug, got, want)
		}
		if _, err := store.CreateAccount(ctx, tn, finops.AccountInput{Provider: ptr("aws"), ExternalID: ptr("x"), Name: ptr("n")}); err != nil {
			t.Errorf("%s after migrating: %v", tn.Slug, err)
		}
	}
}

// A migrator whose run failed is closed, not lent to the next schema: the
// next tenant migrates on a new session, into its own schema, and the
// failed schema is left as it was.
func TestFailedMigrationSessionIsNotReused(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 3})
	ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
	defer cancel()
	good, broken, next := f.tenants[0], f.tenants[1], f.tenants[2]
	for _, tn := range f.tenants {
		migrateTo(t, f, tn, 0, nil)
	}
	f.db.Exec(t, `REVOKE CREATE ON SCHEMA `+ident(broken)+` FROM `+isolation.OwnerRole)
	var dials atomic.Int64
	s := countingStrategy(t, f, 1, &dials)

	if _, err := s.Migrate(ctx, good); err != nil {
		t.Fatal(err)
	}
	if st := s.MigratorStats(); st.Connects != 1 || st.Idle != 1 {
		t.Fatalf("after one migration: %+v, want one session, kept", st)
	}
	before := layout(t, f)
	if _, err := s.Migrate(ctx, broken); err == nil || code(err) != insufficientPrivilege {
		t.Fatalf("migrating a schema the owner may not create in: %v, want permission denied", err)
	}
	st := s.MigratorStats()
	if st.Reused != 1 || st.Discarded != 1 || st.Idle != 0 || st.Busy != 0 {
		t.Fatalf("after the failed run: %+v, want the reused session discarded", st)
	}
	if got := layout(t, f); got[schema.Name(broken.ID)] != before[schema.Name(broken.ID)] {
		t.Errorf("the failed run changed %s: %q, was %q", broken.Slug, got[schema.Name(broken.ID)], before[schema.Name(broken.ID)])
	}
	if _, err := s.Migrate(ctx, next); err != nil {
		t.Fatal(err)
	}
	st = s.MigratorStats()
	if st.Connects != 2 || st.Reused != 1 || st.Idle != 1 {
		t.Errorf("after the next run: %+v, want it on a new session", st)
	}
	after := layout(t, f)
	if after[schema.Name(next.ID)] != after[schema.Name(good.ID)] || !strings.HasSuffix(after[schema.Name(next.ID)], " | "+allVersions()) {
		t.Errorf("next tenant's schema: %q, want %q", after[schema.Name(next.ID)], after[schema.Name(good.ID)])
	}
	for name, was := range before {
		if name != schema.Name(next.ID) && after[name] != was {
			t.Errorf("schema %s changed: %q, was %q", name, after[name], was)
		}
	}
}

// Migrators kept idle are closed after their idle time, and all of them
// by Close, after which Migrate refuses.
func TestIdleMigratorsAreClosed(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 2})
	ctx, cancel := context.WithTimeout(context.Background(), await.Deadline)
	defer cancel()
	for _, tn := range f.tenants {
		migrateTo(t, f, tn, 0, nil)
	}
	m := isolation.NewMigrators(f.owner.Config().ConnConfig, 2, 50*time.Millisecond)
	strategytest.CloseAtEnd(t, "the migrators", m.Close)
	if _, err := m.Migrate(ctx, schema.Name(f.tenants[0].ID)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(await.Deadline); m.Stats().Idle != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("an idle migrator still open after %s: %+v", await.Deadline, m.Stats())
		}
	}
	m.Close()
	if _, err := m.Migrate(ctx, schema.Name(f.tenants[1].ID)); !errors.Is(err, isolation.ErrMigratorsClosed) {
		t.Errorf("Migrate after Close: %v, want ErrMigratorsClosed", err)
	}
	if st := m.Stats(); st.Connects != 1 || st.Idle != 0 || st.Busy != 0 {
		t.Errorf("after Close: %+v", st)
	}
}
