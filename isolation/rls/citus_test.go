//go:build citus

package rls_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

// On a Citus coordinator (`make test/citus`), `bulkhead migrate` has
// distributed every tenant table on tenant_id in one co-location group, and
// the rows two tenants write through the strategy land on different
// workers: read there, shard by shard, not through the coordinator's
// bookkeeping.
func TestCitusTenantsLandOnDifferentWorkers(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	ctx := context.Background()
	db := pgtest.New(t)
	admin := pgtest.Pool(t, db.AdminURL)

	// Every tenant table is hash-distributed on tenant_id, all co-located.
	rows, err := admin.Query(ctx, `
		SELECT c.relname, p.partmethod::text, column_to_column_name(p.logicalrelid, p.partkey), p.colocationid
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
		WHERE n.nspname = 'public' AND c.relkind = 'r'
		  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	type dist struct {
		Table, Method, Column *string
		Colocation            *int64
	}
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[dist])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 4 {
		t.Fatalf("found %d tenant tables, want at least 4", len(tables))
	}
	for _, d := range tables {
		if d.Method == nil || *d.Method != "h" || *d.Column != isolation.DistributionColumn || *d.Colocation != *tables[0].Colocation {
			t.Errorf("table %s: partmethod %v, column %v, colocation %v; want hash-distributed on tenant_id with colocation %d",
				*d.Table, deref(d.Method), deref(d.Column), deref(d.Colocation), *tables[0].Colocation)
		}
	}

	// Two tenants whose shards sit on different workers: the hash of the
	// id decides, so draw ids until the second one lands elsewhere.
	workerOf := func(id uuid.UUID) int {
		var port int
		if err := admin.QueryRow(ctx, `
			SELECT p.nodeport FROM pg_dist_shard_placement p
			WHERE p.shardid = get_shard_id_for_distribution_column('accounts', $1::uuid)`, id).Scan(&port); err != nil {
			t.Fatal(err)
		}
		return port
	}
	a := isolation.Tenant{ID: uuid.New(), Slug: "tenant-a", Strategy: isolation.RLS}
	b := isolation.Tenant{ID: uuid.New(), Slug: "tenant-b", Strategy: isolation.RLS}
	for i := 0; workerOf(b.ID) == workerOf(a.ID); i++ {
		if i == 100 {
			t.Fatal("100 tenant ids all hashed to the first tenant's worker: are there two workers with shards?")
		}
		b.ID = uuid.New()
	}

	// Each tenant writes an account, a cost and a budget, as the serving
	// role through the strategy's binding.
	s := rls.New(pgtest.Pool(t, db.AppURL), nil)
	for _, tn := range []isolation.Tenant{a, b} {
		err := s.Run(ctx, tn, func(tx pgx.Tx) error {
			account := uuid.New()
			for _, q := range []string{
				`INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', 'x', 'n') RETURNING id`,
				`INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, currency)
				 VALUES ($1, gen_random_uuid(), $2, 's', '2025-01-01', 1, 'USD') RETURNING id`,
				`INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id)
				 VALUES ($1, gen_random_uuid(), 'b', 1, 'USD', 'monthly', $2) RETURNING id`,
			} {
				if _, err := tx.Exec(ctx, q, tn.ID, account); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("write %s: %v", tn, err)
		}
	}

	// Ask every shard placement, on its worker, whose rows it holds.
	for _, table := range []string{"accounts", "cost_items", "budgets"} {
		rows, err := admin.Query(ctx, `
			SELECT nodeport, success, result FROM run_command_on_placements($1::regclass,
				$$SELECT COALESCE(string_agg(DISTINCT tenant_id::text, ','), '') FROM %s$$)`, table)
		if err != nil {
			t.Fatal(err)
		}
		type placement struct {
			Port    int
			Success bool
			Result  string
		}
		placements, err := pgx.CollectRows(rows, pgx.RowToStructByPos[placement])
		if err != nil {
			t.Fatal(err)
		}
		found := map[uuid.UUID][]int{} // tenant -> worker ports holding its rows
		for _, p := range placements {
			if !p.Success {
				t.Fatalf("%s on worker %d: %s", table, p.Port, p.Result)
			}
			for _, id := range strings.Split(p.Result, ",") {
				if id != "" {
					found[uuid.MustParse(id)] = append(found[uuid.MustParse(id)], p.Port)
				}
			}
		}
		for _, tn := range []isolation.Tenant{a, b} {
			if want := []int{workerOf(tn.ID)}; !slices.Equal(found[tn.ID], want) {
				t.Errorf("%s: %s's rows are on workers %v, want only %v", table, tn.Slug, found[tn.ID], want)
			}
		}
		if fa, fb := found[a.ID], found[b.ID]; len(fa) == 1 && len(fb) == 1 && fa[0] == fb[0] {
			t.Errorf("%s: both tenants' rows are on worker %d", table, fa[0])
		}
	}
}

func deref[T any](p *T) string {
	if p == nil {
		return "NULL"
	}
	return fmt.Sprint(*p)
}

// A tenant table that a later migration adds is distributed, co-located
// with the others, by the next `bulkhead migrate`: Setup distributes what
// is not distributed yet, every run.
func TestCitusDistributesATableAddedLater(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	ctx := context.Background()
	db := pgtest.New(t)
	db.Exec(t, `SET ROLE bulkhead_owner; CREATE TABLE later (tenant_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (tenant_id, id))`)
	pools, err := postgres.Open(pgtest.Config(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)
	if err := rls.New(nil, pools.Owner).Setup(ctx); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Pool(t, db.AdminURL)
	var colocated bool
	if err := admin.QueryRow(ctx, `
		SELECT (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'later'::regclass)
		     = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'accounts'::regclass)`).Scan(&colocated); err != nil {
		t.Fatal(err)
	}
	if !colocated {
		t.Fatal("the table added later is not distributed co-located with accounts")
	}
	// The serving role was granted DML on it, which reaches the shards.
	s := rls.New(pgtest.Pool(t, db.AppURL), nil)
	tn := isolation.Tenant{ID: uuid.New(), Slug: "tenant-a", Strategy: isolation.RLS}
	if err := s.Run(ctx, tn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO later (tenant_id, id) VALUES ($1, $2)`, tn.ID, uuid.New())
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A tenant that outgrows its neighbours gets a shard of its own
// (isolate_tenant_to_new_shard, which splits every co-located table) and that
// shard group moves to another worker (citus_move_shard_placement) while
// Bulkhead keeps its connections: the tenant's rows are then only on the new
// worker, the strategy still serves them, and the other tenant, who shared
// the old shard, still sees only its own.
func TestCitusMovesATenantToAnotherWorker(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	ctx := context.Background()
	db := pgtest.New(t)
	admin := pgtest.Pool(t, db.AdminURL)
	s := rls.New(pgtest.Pool(t, db.AppURL), nil)

	a := isolation.Tenant{ID: uuid.New(), Slug: "tenant-a", Strategy: isolation.RLS}
	b := isolation.Tenant{ID: uuid.New(), Slug: "tenant-b", Strategy: isolation.RLS}
	write := func(tn isolation.Tenant, n int) {
		t.Helper()
		if err := s.Run(ctx, tn, func(tx pgx.Tx) error {
			for range n {
				if _, err := tx.Exec(ctx, `INSERT INTO accounts (tenant_id, id, provider, external_id, name)
					VALUES ($1, gen_random_uuid(), 'aws', gen_random_uuid()::text, 'n') RETURNING id`, tn.ID); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("write %s: %v", tn, err)
		}
	}
	count := func(tn isolation.Tenant) (n int) {
		t.Helper()
		if err := s.Run(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
		}); err != nil {
			t.Fatalf("read %s: %v", tn, err)
		}
		return n
	}
	write(a, 3)
	write(b, 2)

	// The tenant's own shard, on whichever worker the split left it.
	var shard int64
	if err := admin.QueryRow(ctx, `SELECT isolate_tenant_to_new_shard('accounts', $1::uuid, 'CASCADE')`, a.ID).Scan(&shard); err != nil {
		t.Fatalf("isolate_tenant_to_new_shard: %v", err)
	}
	var fromHost, toHost string
	var fromPort, toPort int
	if err := admin.QueryRow(ctx, `
		SELECT p.nodename, p.nodeport, w.nodename, w.nodeport
		FROM pg_dist_shard_placement p, pg_dist_node w
		WHERE p.shardid = $1 AND w.noderole = 'primary' AND w.groupid <> 0 AND w.isactive
		  AND (w.nodename, w.nodeport) <> (p.nodename, p.nodeport)
		LIMIT 1`, shard).Scan(&fromHost, &fromPort, &toHost, &toPort); err != nil {
		t.Fatalf("find the shard's worker and another: %v", err)
	}
	if _, err := admin.Exec(ctx, `SELECT citus_move_shard_placement($1, $2, $3, $4, $5, shard_transfer_mode := 'block_writes')`,
		shard, fromHost, fromPort, toHost, toPort); err != nil {
		t.Fatalf("citus_move_shard_placement: %v", err)
	}

	// Only the new worker holds the tenant's rows, for every co-located table.
	var placements []int
	rows, err := admin.Query(ctx, `
		SELECT DISTINCT p.nodeport FROM pg_dist_shard_placement p
		WHERE p.shardid = get_shard_id_for_distribution_column('accounts', $1::uuid)`, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if placements, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(placements, []int{toPort}) {
		t.Fatalf("after the move the tenant's shard is on workers %v, want only %d", placements, toPort)
	}
	var onTarget string
	if err := admin.QueryRow(ctx, `
		SELECT result FROM run_command_on_placements('accounts',
			format($$SELECT count(*) FROM %%s WHERE tenant_id = %L$$, $1::text))
		WHERE shardid = $2`, a.ID, shard).Scan(&onTarget); err != nil {
		t.Fatal(err)
	}
	if onTarget != "3" {
		t.Errorf("the moved shard holds %s of the tenant's 3 accounts", onTarget)
	}

	// Through the same pool, both tenants are served, each its own rows,
	// and writes reach the moved shard.
	write(a, 1)
	if n := count(a); n != 4 {
		t.Errorf("tenant a sees %d accounts after the move, want 4", n)
	}
	if n := count(b); n != 2 {
		t.Errorf("tenant b sees %d accounts after the move, want 2", n)
	}
}
