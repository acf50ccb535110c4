package isolation_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// The per-schema listing behind GrantTenantTables reaches a schema's
// relations through pg_depend (indexed by namespace) rather than by
// filtering pg_class: it must name exactly the tables TenantTableQuery
// names in that schema, whatever the kinds of relation beside them.
func TestSchemaTenantTablesMatchTenantTableQuery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.Empty(t)
	db.Exec(t, `
		CREATE SCHEMA a; CREATE SCHEMA b; CREATE SCHEMA "Odd ""one""";
		CREATE TABLE a.plain (tenant_id uuid, x int);
		CREATE TABLE a.no_tenant (x int);
		CREATE TABLE a.parted (tenant_id uuid, d date) PARTITION BY RANGE (d);
		CREATE TABLE a.parted_2026 PARTITION OF a.parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		CREATE VIEW a.a_view AS SELECT tenant_id FROM a.plain;
		CREATE MATERIALIZED VIEW a.a_matview AS SELECT tenant_id FROM a.plain;
		CREATE SEQUENCE a.a_seq;
		CREATE TABLE a.dropped (tenant_id uuid, x int); ALTER TABLE a.dropped DROP COLUMN tenant_id;
		CREATE UNLOGGED TABLE a.unlogged (tenant_id uuid);
		CREATE TABLE b.moved (tenant_id uuid); ALTER TABLE b.moved SET SCHEMA a;
		CREATE TABLE b.stays (tenant_id uuid, big text);
		CREATE TABLE "Odd ""one""".t (tenant_id uuid);
		CREATE TABLE public.pub (tenant_id uuid);`)
	conn, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	for _, schema := range []string{"a", "b", `Odd "one"`, "public", "pg_catalog", "information_schema", "bulkhead", "missing"} {
		got, err := isolation.TenantTablesOf(ctx, conn, schema)
		if err != nil {
			t.Fatalf("tables of %s: %v", schema, err)
		}
		rows, err := conn.Query(ctx, `SELECT t.relname FROM (`+isolation.TenantTableQuery+`) t WHERE t.nspname = $1 ORDER BY 1`, schema)
		if err != nil {
			t.Fatal(err)
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("tables of %s: %q, TenantTableQuery says %q", schema, got, want)
		}
		if schema == "a" && !slices.Equal(got, []string{"moved", "parted", "parted_2026", "plain", "unlogged"}) {
			t.Errorf("tables of a: %q, want moved, parted, parted_2026, plain and unlogged", got)
		}
	}
}

// Migrators of one schema that finish together grant on its tables at
// once; two GRANTs rewriting one table's ACL at the same time fail
// ("tuple concurrently updated") unless they are serialised.
func TestConcurrentGrantsOnOneSchema(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.Empty(t)
	db.Exec(t, `CREATE SCHEMA g; CREATE TABLE g.goose_tenant (id int);
		CREATE TABLE g.a (tenant_id uuid); CREATE TABLE g.b (tenant_id uuid); CREATE TABLE g.c (tenant_id uuid)`)
	pool := pgtest.Pool(t, db.AdminURL)
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			var err error
			for range 25 {
				if err = isolation.GrantTenantTables(ctx, pool, "g", isolation.AppRole); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("concurrent grants: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("concurrent grants did not finish within a minute")
		}
	}
}
