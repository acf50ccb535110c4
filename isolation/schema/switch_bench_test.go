package schema_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// BenchmarkTenantSwitch measures where the schema strategy's time goes
// around a point read (finops.Account's statement, sent as one read), in
// wall time and in the CPU time of the PostgreSQL backends
// (backend-µs/op, from /proc: run it under withpg). On one serving
// connection: the same tenant again (same-tenant); another tenant each
// time, each seen before by the backend (other-tenant-warm: PostgreSQL
// analyses and plans the cached statement again for the new search_path
// and role); the same behind the move fence (other-tenant-warm-fenced);
// the same with a statement of each tenant's own
// (other-tenant-warm-own-statement: what per-tenant statements would
// save); and each tenant for the first time on a new backend (first-touch:
// cold relation and catalog caches). BULKHEAD_BENCH_TENANTS sets how many
// tenants (default 40).
//
//	BULKHEAD_BENCH_TENANTS=100 go run ./internal/cmd/withpg -- go test -run '^$' -bench TenantSwitch -benchtime 3000x ./isolation/schema
func BenchmarkTenantSwitch(b *testing.B) {
	f := oneConnection(b, "switch")
	n := len(f.tenants)
	ctx := context.Background()
	// readIn reads one account of tn as one read, under rctx (which may
	// carry the fence's statements); read under ctx.
	readIn := func(b *testing.B, rctx context.Context, tn isolation.Tenant, sql string) {
		readOne(b, f, rctx, tn, sql, tn.ID, uuid.Nil)
	}
	read := func(b *testing.B, tn isolation.Tenant, sql string) { readIn(b, ctx, tn, sql) }
	// cpu returns the CPU time the backends of pool's idle connections
	// have run for (/proc/PID/schedstat: the server runs on this machine).
	cpu := func(b *testing.B, pool *pgxpool.Pool) time.Duration {
		d, ok := pgtest.PoolBackendCPU(ctx, pool)
		if !ok {
			b.Fatal("no backend CPU time: the server must run on this machine, as under withpg")
		}
		return d
	}
	perOp := func(b *testing.B, d time.Duration) {
		b.ReportMetric(float64(d.Microseconds())/float64(b.N), "backend-µs/op")
	}
	perTenant := func(tn isolation.Tenant) string {
		return finops.AccountStatement + " /* " + tn.ID.String() + " */"
	}
	b.Run("same-tenant", func(b *testing.B) {
		read(b, f.tenants[0], finops.AccountStatement)
		start := cpu(b, f.app)
		for b.Loop() {
			read(b, f.tenants[0], finops.AccountStatement)
		}
		perOp(b, cpu(b, f.app)-start)
	})
	b.Run("other-tenant-warm", func(b *testing.B) {
		for _, tn := range f.tenants {
			read(b, tn, finops.AccountStatement)
		}
		start := cpu(b, f.app)
		i := 0
		for b.Loop() {
			i++
			read(b, f.tenants[i%n], finops.AccountStatement)
		}
		perOp(b, cpu(b, f.app)-start)
	})
	b.Run("other-tenant-warm-fenced", func(b *testing.B) {
		// As the server reads: behind the move fence, whose function
		// the backend calls under each tenant's search_path in turn.
		fenced := func(b *testing.B, tn isolation.Tenant) {
			stmt, err := isolation.FenceStep(tn)
			if err != nil {
				b.Fatal(err)
			}
			readIn(b, isolation.WithSteps(ctx, stmt), tn, finops.AccountStatement)
		}
		for _, tn := range f.tenants {
			fenced(b, tn)
		}
		start := cpu(b, f.app)
		i := 0
		for b.Loop() {
			i++
			fenced(b, f.tenants[i%n])
		}
		perOp(b, cpu(b, f.app)-start)
	})
	b.Run("other-tenant-warm-own-statement", func(b *testing.B) {
		for _, tn := range f.tenants {
			read(b, tn, perTenant(tn))
		}
		start := cpu(b, f.app)
		i := 0
		for b.Loop() {
			i++
			tn := f.tenants[i%n]
			read(b, tn, perTenant(tn))
		}
		perOp(b, cpu(b, f.app)-start)
	})
	b.Run("first-touch", func(b *testing.B) {
		// A new backend every n-1 reads, each of a tenant it has not
		// served.
		i := 0
		var used, start time.Duration
		for b.Loop() {
			if i%(n-1) == 0 {
				b.StopTimer()
				if i > 0 {
					used += cpu(b, f.app) - start
				}
				f.app.Reset()
				read(b, f.tenants[0], finops.AccountStatement)
				start = cpu(b, f.app)
				b.StartTimer()
			}
			read(b, f.tenants[1+i%(n-1)], finops.AccountStatement)
			i++
		}
		perOp(b, used+cpu(b, f.app)-start)
	})
}

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
	f := oneConnection(b, "memory")
	n := len(f.tenants)
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
	readOne(b, f, ctx, f.tenants[0], shapes[0].sql, shapes[0].args(f.tenants[0])...)
	before := anon()
	var grew int64
	// The first pass is the measurement; later ones (without -benchtime
	// 1x) find every statement prepared and add nothing.
	for pass := 0; b.Loop(); pass++ {
		prev := anon()
		for k, s := range shapes {
			for _, tn := range f.tenants {
				readOne(b, f, ctx, tn, s.sql, s.args(tn)...)
			}
			now := anon()
			if pass == 0 {
				b.Logf("shape %d on %d tenants: backend RssAnon %d kB, %+d kB, %.1f kB a tenant", k, n, now, now-prev, float64(now-prev)/float64(n))
				grew = now - before
			}
			prev = now
		}
	}
	b.ReportMetric(float64(grew)/float64(n*len(shapes)), "kB/statement")
	b.ReportMetric(float64(grew)/1024, "MB/backend")
}

// oneConnection provisions BULKHEAD_BENCH_TENANTS schema tenants (default
// 40), their slugs prefix-NNNN, served by a pool of one connection.
func oneConnection(b *testing.B, prefix string) *fixture {
	n := pgtest.BenchTenants(b, 40)
	f := setup(b, options{tenants: 1, app: func(c *pgxpool.Config) { c.MaxConns, c.MinConns = 1, 0 }})
	for i := 1; i < n; i++ {
		f.tenants = append(f.tenants, f.provision(b, fmt.Sprintf("%s-%04d", prefix, i)))
	}
	return f
}

// readOne sends sql with args as one read (isolation.OneRead) bound to
// tn, discards its rows, and fails b on an error.
func readOne(b *testing.B, f *fixture, ctx context.Context, tn isolation.Tenant, sql string, args ...any) {
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
