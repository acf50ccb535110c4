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
	n := pgtest.BenchTenants(b, 40)
	f := setup(b, options{tenants: 1, app: func(c *pgxpool.Config) { c.MaxConns, c.MinConns = 1, 0 }})
	for i := 1; i < n; i++ {
		f.tenants = append(f.tenants, f.provision(b, fmt.Sprintf("switch-%04d", i)))
	}
	ctx := context.Background()
	// readIn reads one account of tn as one read, under rctx (which may
	// carry the fence's statements); read under ctx.
	readIn := func(b *testing.B, rctx context.Context, tn isolation.Tenant, sql string) {
		err := f.strategy.Run(isolation.OneRead(rctx), tn, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, tn.ID, uuid.Nil)
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
	read := func(b *testing.B, tn isolation.Tenant, sql string) { readIn(b, ctx, tn, sql) }
	// cpu returns the CPU time the backends of pool's idle connections
	// have run for (/proc/PID/schedstat: the server runs on this machine).
	cpu := func(b *testing.B, pool *pgxpool.Pool) time.Duration {
		var sum time.Duration
		for _, c := range pool.AcquireAllIdle(ctx) {
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", c.Conn().PgConn().PID()))
			c.Release()
			if err != nil {
				b.Fatalf("backend CPU time (the server must run on this machine, as under withpg): %v", err)
			}
			ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			sum += time.Duration(ns)
		}
		return sum
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
