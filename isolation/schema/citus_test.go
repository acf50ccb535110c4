//go:build citus

package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// citusOnly fails t unless the test server is a Citus coordinator.
func citusOnly(t *testing.T) {
	t.Helper()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
}

// workerOf returns the port of the one worker holding every table of tn's
// schema, failing t unless the schema is a distributed schema whose tables
// are single-shard tables of its own co-location group, all placed there.
func workerOf(t *testing.T, admin *pgx.Conn, tn isolation.Tenant) int {
	t.Helper()
	ctx := context.Background()
	name := schema.Name(tn.ID)
	var colocation int64
	if err := admin.QueryRow(ctx, `SELECT colocationid FROM pg_dist_schema WHERE schemaid = to_regnamespace($1)`,
		pgx.Identifier{name}.Sanitize()).Scan(&colocation); err != nil {
		t.Fatalf("%s: schema %s is not a distributed schema: %v", tn.Slug, name, err)
	}
	type table struct {
		Name       string
		Method     *string
		Colocation *int64
		Ports      []int32
	}
	rows, err := admin.Query(ctx, `
		SELECT c.relname, p.partmethod::text, p.colocationid,
		       ARRAY(SELECT DISTINCT sp.nodeport FROM pg_dist_shard s JOIN pg_dist_shard_placement sp USING (shardid)
		             WHERE s.logicalrelid = c.oid ORDER BY 1)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
		WHERE n.nspname = $1 AND c.relkind = 'r'
		ORDER BY 1`, name)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[table])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 4 {
		t.Fatalf("%s: schema %s has %d tables, want the tenant tables and goose's", tn.Slug, name, len(tables))
	}
	port := 0
	for _, tb := range tables {
		// 'n': a single-shard table, as schema-based sharding makes them.
		if tb.Method == nil || *tb.Method != "n" || *tb.Colocation != colocation || len(tb.Ports) != 1 {
			t.Fatalf("%s: table %s.%s: partmethod %v, colocation %v, on workers %v; want one shard in the schema's group %d",
				tn.Slug, name, tb.Name, deref(tb.Method), deref(tb.Colocation), tb.Ports, colocation)
		}
		if port == 0 {
			port = int(tb.Ports[0])
		}
		if int(tb.Ports[0]) != port {
			t.Fatalf("%s: table %s.%s is on worker %d, the schema's other tables on %d", tn.Slug, name, tb.Name, tb.Ports[0], port)
		}
	}
	return port
}

func deref[T any](p *T) string {
	if p == nil {
		return "NULL"
	}
	return fmt.Sprint(*p)
}

// On a Citus coordinator with two workers, each tenant schema is a
// distributed schema whose tables sit together on one worker, and two
// tenants' schemas can sit on different workers: each worker then holds
// the one tenant's rows, read there shard by shard, and not the other's.
// Deprovisioning drops the schema and the role on every node.
func TestCitusTenantSchemasLandOnDifferentWorkers(t *testing.T) {
	t.Parallel()
	citusOnly(t)
	ctx := context.Background()
	f := setup(t, options{tenants: 2})
	admin, err := pgx.Connect(ctx, f.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var workers int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive AND noderole = 'primary'`).Scan(&workers); err != nil {
		t.Fatal(err)
	}
	if workers != 2 {
		t.Fatalf("the coordinator has %d active workers, want 2 (withpg -citus)", workers)
	}

	// Citus picks a distributed schema's worker itself: provision until
	// a tenant's lands elsewhere than the first one's.
	a, b := f.tenants[0], f.tenants[1]
	pa := workerOf(t, admin, a)
	for i := 0; workerOf(t, admin, b) == pa; i++ {
		if i == 6 {
			t.Fatalf("8 tenant schemas all on worker %d: Citus does not spread distributed schemas over the workers", pa)
		}
		b = f.provision(t, fmt.Sprintf("tenant-%d", i+3))
	}
	pb := workerOf(t, admin, b)

	// Each tenant's rows, asked of every placement of its accounts table
	// on its worker: the one worker named above, holding that tenant only.
	for _, tc := range []struct {
		tn   isolation.Tenant
		port int
	}{{a, pa}, {b, pb}} {
		type placement struct {
			Port    int
			Success bool
			Result  string
		}
		rows, err := admin.Query(ctx, `
			SELECT nodeport, success, result FROM run_command_on_placements($1::regclass,
				$$SELECT string_agg(DISTINCT tenant_id::text || ':' || name, ',') FROM %s$$)`,
			pgx.Identifier{schema.Name(tc.tn.ID), "accounts"}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		placements, err := pgx.CollectRows(rows, pgx.RowToStructByPos[placement])
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s:%s", tc.tn.ID, tc.tn.Slug)
		if len(placements) != 1 || !placements[0].Success || placements[0].Port != tc.port || placements[0].Result != want {
			t.Errorf("%s: placements of its accounts %+v; want one, on worker %d, holding %q", tc.tn.Slug, placements, tc.port, want)
		}
	}

	// Deprovisioned, nothing of the tenant is left on any node.
	if err := f.strategy.Deprovision(ctx, a); err != nil {
		t.Fatal(err)
	}
	name := schema.Name(a.ID)
	rows, err := admin.Query(ctx, `
		SELECT nodeport, success, result FROM run_command_on_workers(format(
			$$SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = %1$L) + (SELECT count(*) FROM pg_roles WHERE rolname = %1$L)$$, $1::text))`, name)
	if err != nil {
		t.Fatal(err)
	}
	type left struct {
		Port    int
		Success bool
		Result  string
	}
	lefts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[left])
	if err != nil {
		t.Fatal(err)
	}
	if len(lefts) != 2 {
		t.Fatalf("asked %d workers, want 2", len(lefts))
	}
	for _, l := range lefts {
		if !l.Success || l.Result != "0" {
			t.Errorf("worker %d after deprovisioning %s: %q schemas and roles named %s (success %v)", l.Port, a.Slug, l.Result, name, l.Success)
		}
	}
}

// Two databases of one Citus cluster — two deployments, or the tests'
// databases side by side — provision schema tenants one after the other.
// Roles are global, so the serving role is a member of the tenant roles of
// both; Citus records distributed objects per database. The serving role's
// membership is granted on the coordinator only (it is where SET ROLE
// runs): propagated, the second database's GRANT would make Citus re-create
// the first database's tenant role on the workers, which only a superuser
// may, and provisioning failed there.
func TestCitusTenantsOfTwoDatabasesSideBySide(t *testing.T) {
	t.Parallel()
	citusOnly(t)
	ctx := context.Background()
	first := setup(t, options{tenants: 1})
	second := setup(t, options{tenants: 1}) // provisioned after first's
	for _, f := range []*fixture{first, second} {
		tn := f.tenants[0]
		var n int
		if err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
		}); err != nil {
			t.Fatalf("%s: %v", tn, err)
		}
		if n != rowsPer {
			t.Errorf("%s sees %d accounts, want %d", tn, n, rowsPer)
		}
	}
	// The membership is the coordinator's; the workers know the role,
	// LOGIN, with no member: Citus logs in there as the tenant's role.
	name := schema.Name(second.tenants[0].ID)
	admin, err := pgx.Connect(ctx, second.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var member bool
	if err := admin.QueryRow(ctx, `SELECT pg_has_role($1, $2, 'MEMBER')`, isolation.AppRole, name).Scan(&member); err != nil {
		t.Fatal(err)
	}
	if !member {
		t.Fatalf("on the coordinator %s is not a member of %s", isolation.AppRole, name)
	}
	rows, err := admin.Query(ctx, `
		SELECT nodeport, success, result FROM run_command_on_workers(format(
			$$SELECT rolcanlogin::text || ',' || pg_has_role(%L, oid, 'MEMBER')::text FROM pg_roles WHERE rolname = %L$$, $1::text, $2::text))`,
		isolation.AppRole, name)
	if err != nil {
		t.Fatal(err)
	}
	type onWorker struct {
		Port    int
		Success bool
		Result  string
	}
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[onWorker])
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if !w.Success || w.Result != "true,false" {
			t.Errorf("worker %d: role %s LOGIN and %s a member: %q (success %v); want true,false", w.Port, name, isolation.AppRole, w.Result, w.Success)
		}
	}
}

// A table a migration creates inside a DO block (as tenant migration
// 00003 creates cost_imports) is left a local table of the coordinator by
// Citus, though its schema is distributed: verify names it, and the next
// migration run adds it to the schema's shard group, rows and all.
func TestCitusMigrateAddsATableLeftLocal(t *testing.T) {
	t.Parallel()
	citusOnly(t)
	ctx := context.Background()
	f := setup(t, options{tenants: 1})
	tn := f.tenants[0]
	name := schema.Name(tn.ID)
	table := pgx.Identifier{name, "notes"}.Sanitize()
	f.db.Exec(t, `SET ROLE `+isolation.OwnerRole+`; DO $$ BEGIN
		CREATE TABLE `+table+` (tenant_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (tenant_id, id));
		INSERT INTO `+table+` VALUES ('`+tn.ID.String()+`', gen_random_uuid());
		ALTER TABLE `+table+` ENABLE ROW LEVEL SECURITY;
		ALTER TABLE `+table+` FORCE ROW LEVEL SECURITY;
		CREATE POLICY tenant_isolation ON `+table+`
			USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
			WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
	END $$`)

	admin, err := pgx.Connect(ctx, f.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var local bool
	if err := admin.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = $1::regclass)`, table).Scan(&local); err != nil {
		t.Fatal(err)
	}
	if !local {
		t.Fatal("Citus distributed a table created inside a DO block: the premise of this test no longer holds")
	}
	findings, err := verify.All(ctx, f.app, f.strategy)
	if err != nil {
		t.Fatal(err)
	}
	object := "table " + name + ".notes" // as regclass prints it
	found := false
	for _, fd := range findings {
		found = found || fd.Code == verify.CodeCitusTableLocal && fd.Object == object && fd.Severity == isolation.Critical
	}
	if !found {
		t.Fatalf("no critical %s finding on %s; got %v", verify.CodeCitusTableLocal, object, findings)
	}

	if _, err := f.strategy.Migrate(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if findings, err = verify.All(ctx, f.app, f.strategy); err != nil {
		t.Fatal(err)
	}
	if len(findings) != 0 {
		t.Fatalf("after migrate: findings %v", findings)
	}
	workerOf(t, admin, tn) // every table of the schema, notes included, on the schema's worker
	var n int
	if err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM notes`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("the tenant reads %d rows of notes after the move into the shard group, want 1", n)
	}
}

// A tenant transaction's connections to the workers end with it: Citus
// reaches the workers as the tenant's role and would otherwise keep one
// connection per worker and tenant role open in every serving connection,
// which ran the workers out of connection slots at a few hundred tenants.
// The reads go through a strategy that set nothing up, as in a serving
// replica whose migration ran in a Job of its own: it learns that the
// database is a Citus coordinator by asking.
func TestCitusTenantTransactionsKeepNoWorkerConnections(t *testing.T) {
	t.Parallel()
	citusOnly(t)
	ctx := context.Background()
	f := setup(t, options{tenants: 3})
	admin, err := pgx.Connect(ctx, f.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	serving := schema.New(f.app, nil)
	roles := make([]string, len(f.tenants))
	for i, tn := range f.tenants {
		roles[i] = schema.Name(tn.ID)
		var n int
		if err := serving.Run(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
		}); err != nil {
			t.Fatalf("%s: %v", tn, err)
		}
		if n != rowsPer {
			t.Fatalf("%s: %d accounts, want %d (the read went to its worker)", tn, n, rowsPer)
		}
	}
	// A worker's backend leaves pg_stat_activity just after its client
	// closed the connection: ask until none is left, within a deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left int
		err := admin.QueryRow(ctx, `
			SELECT coalesce(sum(result::int), 0) FROM run_command_on_workers(format(
				$$SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%L::text[])$$, $1::text[]))`, roles).Scan(&left)
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections of the tenant roles %v still open on the workers 30s after their transactions ended; want none (citus.max_cached_conns_per_worker)", left, roles)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
