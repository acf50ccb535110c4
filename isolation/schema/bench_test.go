package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// BenchmarkThousandTenants provisions 1,000 schema tenants one after the
// other through the control plane (as `bulkhead tenant create` does), puts
// every one of them behind by the whole tenant migration set, migrates them
// all with `bulkhead migrate`'s fan-out, verifies the database, and
// deletes them. It reports the time per provisioned tenant, the migrate-all
// time, the verify time and the time per deleted tenant. Goals on the
// 2-core development machine: under 200 ms per tenant, under 60 s for
// migrate-all. BULKHEAD_BENCH_TENANTS overrides the count.
//
//	go run ./internal/cmd/withpg -- go test -run '^$' -bench ThousandTenants -benchtime 1x ./isolation/schema
func BenchmarkThousandTenants(b *testing.B) {
	n := pgtest.BenchTenants(b, 1000)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		f := setup(b, options{tenants: 1})
		svc := newControl(b, f)
		b.StartTimer()

		start := time.Now()
		slugs := make([]string, n)
		for i := range n {
			slugs[i] = fmt.Sprintf("tenant-%04d", i)
			if _, err := svc.CreateTenant(ctx, slugs[i], ""); err != nil {
				b.Fatal(err)
			}
		}
		provision := time.Since(start)

		b.StopTimer()
		resetTenants(b, f)
		b.StartTimer()
		start = time.Now()
		report, err := svc.Migrate(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		migrate := time.Since(start)
		for _, m := range report.Tenants {
			if m.State != "current" {
				b.Fatalf("after migrate-all: %+v", m)
			}
		}

		start = time.Now()
		findings, err := f.strategy.Verify(ctx)
		if err != nil || len(findings) != 0 {
			b.Fatalf("verify: %v %v", findings, err)
		}
		verify := time.Since(start)

		start = time.Now()
		for _, slug := range slugs {
			if _, err := svc.DeleteTenant(ctx, slug); err != nil {
				b.Fatal(err)
			}
		}
		deprovision := time.Since(start)

		b.ReportMetric(float64(provision.Milliseconds())/float64(n), "ms/provision")
		b.ReportMetric(migrate.Seconds(), "s/migrate-all")
		b.ReportMetric(float64(verify.Milliseconds()), "ms/verify")
		b.ReportMetric(float64(deprovision.Milliseconds())/float64(n), "ms/deprovision")
		b.Logf("%d tenants at tenant migration head %d: provision %.1f ms each, migrate-all %.1f s (parallelism %d), verify %d ms, delete %.1f ms each",
			n, migrations.Tenant.Head(), float64(provision.Milliseconds())/float64(n), migrate.Seconds(),
			f.cfg.Isolation.MigrateParallelism, verify.Milliseconds(), float64(deprovision.Milliseconds())/float64(n))
	}
}

// resetTenants takes every tenant schema of f's database back to version 0
// — no tenant table, goose's version table holding only its base row — as
// the superuser, and records that in the control plane: every tenant is
// then behind by the whole migration set.
func resetTenants(b *testing.B, f *fixture) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.db.AdminURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT n.nspname, array_agg(c.relname::text ORDER BY c.relname)
		FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p') AND c.relname <> $1
		WHERE n.nspname ~ '^t_[0-9a-f]{32}$'
		GROUP BY 1`, migrations.Tenant.Table)
	if err != nil {
		b.Fatal(err)
	}
	type schemaTables struct {
		schema string
		tables []string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (schemaTables, error) {
		var st schemaTables
		return st, r.Scan(&st.schema, &st.tables)
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range all {
		sql := ""
		for i, t := range st.tables {
			if i > 0 {
				sql += ", "
			}
			sql += pgx.Identifier{st.schema, t}.Sanitize()
		}
		sql = "DROP TABLE " + sql + " CASCADE; DELETE FROM " + pgx.Identifier{st.schema, migrations.Tenant.Table}.Sanitize() + " WHERE version_id > 0"
		if _, err := conn.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE bulkhead.tenants SET version = 0`); err != nil {
		b.Fatal(err)
	}
}
