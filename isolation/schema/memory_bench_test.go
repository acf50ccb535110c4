package schema_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// BenchmarkStatementMemory measures what the schema strategy's
// per-tenant statements cost a backend: on one serving connection, a read
// of each of four shapes (the application's account read, and a list, a
// sum and a count like its other reads) for every tenant in turn, and the
// backend's private memory (RssAnon, /proc: run it under withpg) after
// each shape. Each shape's growth is its prepared statements (plan source
// and generic plan) and the relation and catalog entries of the tables it
// reads, which a backend serving the tenant holds anyway. The figures are
// behind maxStatements in isolation/oneread.go. BULKHEAD_BENCH_TENANTS
// sets how many tenants (default 40).
//
//	BULKHEAD_BENCH_TENANTS=1000 go run ./internal/cmd/withpg -- go test -run '^$' -bench StatementMemory -benchtime 1x ./isolation/schema
func BenchmarkStatementMemory(b *testing.B) {
	n := pgtest.BenchTenants(b, 40)
	f := setup(b, options{tenants: 1, app: func(c *pgxpool.Config) { c.MaxConns, c.MinConns = 1, 0 }})
	for i := 1; i < n; i++ {
		f.tenants = append(f.tenants, f.provision(b, fmt.Sprintf("memory-%04d", i)))
	}
	ctx := context.Background()
	shapes := []struct {
		sql  string
		args func(isolation.Tenant) []any
	}{
		{finops.AccountStatement, func(tn isolation.Tenant) []any { return []any{tn.ID, uuid.Nil} }},
		{`SELECT id, name FROM accounts WHERE tenant_id = $1 ORDER BY id LIMIT 50`, func(tn isolation.Tenant) []any { return []any{tn.ID} }},
		{`SELECT c.currency, sum(c.amount)::text FROM cost_items c WHERE c.tenant_id = $1 GROUP BY 1`, func(tn isolation.Tenant) []any { return []any{tn.ID} }},
		{`SELECT count(*) FROM budgets WHERE tenant_id = $1`, func(tn isolation.Tenant) []any { return []any{tn.ID} }},
	}
	read := func(tn isolation.Tenant, sql string, args []any) {
		err := f.strategy.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// anon returns the serving backend's private memory in kB.
	anon := func() int64 {
		c, err := f.app.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Release()
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Conn().PgConn().PID()))
		if err != nil {
			b.Fatalf("backend memory (the server must run on this machine, as under withpg): %v", err)
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssAnon:" {
				kb, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				return kb
			}
		}
		b.Fatal("no RssAnon in the backend's /proc status")
		return 0
	}
	b.StopTimer()
	read(f.tenants[0], shapes[0].sql, shapes[0].args(f.tenants[0]))
	before := anon()
	prev := before
	for b.Loop() {
		// Once: the figures are the memory, not the time.
	}
	for k, s := range shapes {
		for _, tn := range f.tenants {
			read(tn, s.sql, s.args(tn))
		}
		now := anon()
		b.Logf("shape %d on %d tenants: backend RssAnon %d kB, %+d kB, %.1f kB a tenant", k, n, now, now-prev, float64(now-prev)/float64(n))
		prev = now
	}
	b.ReportMetric(float64(prev-before)/float64(n*len(shapes)), "kB/statement")
	b.ReportMetric(float64(prev-before)/1024, "MB/backend")
}
