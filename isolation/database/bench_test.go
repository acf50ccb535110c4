package database_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// benchTenants is the number of tenants of BenchmarkPointRead:
// BULKHEAD_BENCH_TENANTS, or 1,000.
func benchTenants(b *testing.B) int { return pgtest.BenchTenants(b, 1000) }

// BenchmarkProvision measures provisioning one tenant: the database cloned
// from the template and its grants (provision), the migration check and
// re-grant that follow (migrate), and the whole CreateTenant of the control
// plane, records included (create-tenant).
func BenchmarkProvision(b *testing.B) {
	e := start(b, nil)
	s := e.strategy(b)
	ctx := context.Background()
	b.Run("provision+migrate", func(b *testing.B) {
		var prov, mig time.Duration
		var made []isolation.Tenant
		b.Cleanup(func() {
			for _, t := range made {
				_ = s.Deprovision(context.Background(), t)
			}
		})
		for b.Loop() {
			t := isolation.Tenant{ID: uuid.New(), Slug: "bench"}
			begin := time.Now()
			placed, err := s.Provision(ctx, t)
			if err != nil {
				b.Fatal(err)
			}
			made = append(made, placed)
			mid := time.Now()
			if _, err := s.Migrate(ctx, placed); err != nil {
				b.Fatal(err)
			}
			prov += mid.Sub(begin)
			mig += time.Since(mid)
		}
		b.ReportMetric(float64(prov.Milliseconds())/float64(len(made)), "provision-ms/op")
		b.ReportMetric(float64(mig.Milliseconds())/float64(len(made)), "migrate-ms/op")
	})
	b.Run("create-tenant", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := e.Control.CreateTenant(ctx, fmt.Sprintf("bench-%06d", i), ""); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// target is a tenant and the id of one of its accounts.
type target struct {
	tenant  isolation.Tenant
	account uuid.UUID
}

// seed creates n tenants on e, each with one account.
func seed(b *testing.B, e *apitest.Env, n int) []target {
	out := make([]target, n)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range out {
		g.Go(func() error {
			tn, err := e.Control.CreateTenant(context.Background(), fmt.Sprintf("read-%06d", i), "")
			if err != nil {
				return err
			}
			tg := target{tenant: tn.Isolated(), account: uuid.New()}
			err = e.Strategy.Run(context.Background(), tg.tenant, func(tx pgx.Tx) error {
				_, err := tx.Exec(context.Background(),
					`INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', 'x', 'x')`,
					tg.tenant.ID, tg.account)
				return err
			})
			out[i] = tg
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkPointRead reads one account by id through Strategy.Run, with
// 1,000 tenants (BULKHEAD_BENCH_TENANTS) on the database strategy under a
// budget of 50 connections, and the same on the shared-tables strategy
// with a pool of 50, in the same run: tenants picked uniformly from all
// (a working set far over the budget: most reads open a connection), and
// from a hot set of 40 (a working set within it). It reports what
// pointReads does, and how long Verify took over all the tenant databases.
func BenchmarkPointRead(b *testing.B) {
	n := benchTenants(b)
	const budget, hot = 50, 40
	perTenant := start(b, nil,
		apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS", strconv.Itoa(budget)),
		apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", strconv.Itoa(budget)))
	shared := apitest.Start(b, nil, apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", strconv.Itoa(budget)))
	begin := time.Now()
	targets := map[string][]target{isolation.Database: seed(b, perTenant.Env, n)}
	b.Logf("%d tenant databases provisioned in %s", n, time.Since(begin).Round(time.Millisecond))
	targets[isolation.RLS] = seed(b, shared, n)
	begin = time.Now()
	fs, err := perTenant.Registry.Verify(context.Background())
	if err != nil || len(fs) > 0 {
		b.Fatalf("verify: %v %v", fs, err)
	}
	verified := time.Since(begin)
	b.Logf("verify over %d tenant databases took %s", n, verified.Round(time.Millisecond))
	envs := map[string]*apitest.Env{isolation.Database: perTenant.Env, isolation.RLS: shared}
	for _, pick := range []struct {
		name string
		of   func() int
	}{
		{"uniform", func() int { return rand.IntN(n) }},
		{fmt.Sprintf("hot%d", hot), func() int { return rand.IntN(min(hot, n)) }},
	} {
		for _, strategy := range []string{isolation.RLS, isolation.Database} {
			b.Run(pick.name+"/"+strategy, func(b *testing.B) {
				var dials uint64
				if strategy == isolation.Database {
					dials = perTenant.strategy(b).Stats().Dials
				}
				pointReads(b, envs[strategy].DB, envs[strategy].Strategy, targets[strategy], pick.of, 8)
				if strategy == isolation.Database {
					// Each a backend start, with its catalog caches to fill.
					b.ReportMetric(float64(perTenant.strategy(b).Stats().Dials-dials), "dials")
					b.ReportMetric(verified.Seconds(), "verify-s")
					b.ReportMetric(float64(perTenant.strategy(b).Stats().HighWater), "max-conns")
				}
			})
		}
	}
}

// pointReads reads one account of a tenant pick chooses, each read one
// statement (isolation.OneRead) as the API sends it, from perCPU clients
// per CPU. It reports the throughput, the p50 and p99 latency, the reads
// refused for want of a connection, and two costs per read that wall time
// on a shared machine does not show: cpu-µs/op, the machine's CPU time
// (pgtest.MachineCPU: the client, the server's Go code and PostgreSQL
// alike), and backend-µs/op, that of the serving role's backends open
// both before and after (pgtest.RoleBackendCPU: a hot set's, not the
// cold starts of a working set over the budget).
func pointReads(b *testing.B, db *pgtest.DB, s isolation.Runner, targets []target, pick func() int, perCPU int) {
	ctx := isolation.OneRead(context.Background())
	backends := func() map[uint32]time.Duration {
		cpu, ok, err := pgtest.RoleBackendCPU(ctx, db.AdminURL, isolation.AppRole)
		if err != nil {
			b.Fatal(err)
		}
		if !ok {
			return nil
		}
		return cpu
	}
	var (
		mu          sync.Mutex
		lat         []time.Duration
		unavailable atomic.Int64
	)
	b.SetParallelism(perCPU)
	b.ResetTimer()
	begin := time.Now()
	cpu0, cpuOK := pgtest.MachineCPU()
	serving0 := backends()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			tg := targets[pick()]
			t0 := time.Now()
			err := s.Run(ctx, tg.tenant, func(tx pgx.Tx) error {
				var name string
				return tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 AND id = $2`, tg.tenant.ID, tg.account).Scan(&name)
			})
			mine = append(mine, time.Since(t0))
			if errors.Is(err, isolation.ErrUnavailable) {
				unavailable.Add(1)
			} else if err != nil {
				b.Error(err)
				return
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(begin)
	cpu1, cpuOK1 := pgtest.MachineCPU()
	serving1 := backends()
	b.StopTimer()
	if cpuOK && cpuOK1 {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
	if serving0 != nil && serving1 != nil {
		b.ReportMetric(float64(pgtest.CPUGrowth(serving0, serving1).Microseconds())/float64(b.N), "backend-µs/op")
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(unavailable.Load()), "unavailable")
}

// BenchmarkColdStarts runs the bench's point-read mix on the database
// strategy alone, with far more tenants than connections: 150 tenants
// (BULKHEAD_BENCH_TENANTS) under a budget of 25, the first 3 drawing a
// fifth of the reads (the bench's 10 large tenants of 1,000), 8 clients,
// each read one statement (isolation.OneRead) as the API sends it. Most
// reads start a backend; it reports the throughput and the p50 and p99
// latency, which is where the cost of a cold start, and of the choice of
// connections to keep, shows. Run with -benchtime 5s or so.
func BenchmarkColdStarts(b *testing.B) {
	n := pgtest.BenchTenants(b, 150)
	const budget, large = 25, 3
	e := start(b, nil,
		apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS", strconv.Itoa(budget)),
		apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", strconv.Itoa(budget)))
	targets := seed(b, e.Env, n)
	pick := func() int {
		if rand.IntN(5) == 0 {
			return rand.IntN(large)
		}
		return large + rand.IntN(n-large)
	}
	pointReads(b, e.DB, e.Strategy, targets, pick, 4) // 8 clients on 2 cores
}
