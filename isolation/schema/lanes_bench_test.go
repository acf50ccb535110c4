package schema_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// BenchmarkLanes measures point reads of random tenants by 8 clients over
// a serving pool of 20 connections, with the strategy's lanes (lanes) and
// without (pool: every transaction takes the connection released last),
// each on a fresh pool: reads per second and the backends' CPU time per
// read (backend-µs/op, from /proc: run it under withpg).
// BULKHEAD_BENCH_TENANTS sets how many tenants (default 200),
// BULKHEAD_BENCH_CONNS the pool's size, BULKHEAD_BENCH_STATEMENTS how many
// different statements each tenant reads with (default 1: with 4 and 600
// tenants a connection of a plain pool meets more statements than the
// 1,024 it keeps).
//
//	BULKHEAD_BENCH_STATEMENTS=4 BULKHEAD_BENCH_TENANTS=600 go run ./internal/cmd/withpg -- go test -run '^$' -bench Lanes -benchtime 60000x ./isolation/schema
func BenchmarkLanes(b *testing.B) {
	n := pgtest.BenchTenants(b, 200)
	f := setup(b, options{tenants: 1})
	for i := 1; i < n; i++ {
		f.tenants = append(f.tenants, f.provision(b, fmt.Sprintf("lanes-%04d", i)))
	}
	ctx := context.Background()
	for _, lanes := range []bool{true, false} {
		name := map[bool]string{true: "lanes", false: "pool"}[lanes]
		b.Run(name, func(b *testing.B) {
			pc := f.app.Config()
			pc.MaxConns, pc.MinConns = 20, 0
			if v, err := strconv.Atoi(os.Getenv("BULKHEAD_BENCH_CONNS")); err == nil {
				pc.MaxConns = int32(v)
			}
			app, err := pgxpool.NewWithConfig(ctx, pc)
			if err != nil {
				b.Fatal(err)
			}
			defer app.Close()
			s := schema.New(app, nil)
			defer s.Close()
			if !lanes {
				schema.WithoutLanes(s)
			}
			stmts := 1
			if v, err := strconv.Atoi(os.Getenv("BULKHEAD_BENCH_STATEMENTS")); err == nil {
				stmts = v
			}
			read := func(tn isolation.Tenant, k int) error {
				return s.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
					rows, err := tx.Query(ctx, finops.AccountStatement+fmt.Sprintf(" /* %d */", k%stmts), tn.ID, uuid.Nil)
					if err != nil {
						return err
					}
					rows.Close()
					return rows.Err()
				})
			}
			const clients = 8
			var next sync.Mutex
			left := b.N
			cpu0 := backendCPU(b, f)
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(c), 7))
					for {
						next.Lock()
						if left == 0 {
							next.Unlock()
							return
						}
						left--
						next.Unlock()
						if err := read(f.tenants[r.IntN(n)], r.IntN(stmts)); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reads/s")
			b.Logf("%d reads: %s", b.N, schema.LaneCounts(s))
			b.ReportMetric(float64((backendCPU(b, f)-cpu0).Microseconds())/float64(b.N), "backend-µs/op")
		})
	}
}

// backendCPU returns the CPU time the serving role's backends in f's
// database have run for (/proc/PID/schedstat: the server runs on this
// machine).
func backendCPU(b *testing.B, f *fixture) time.Duration {
	rows, err := f.owner.Query(context.Background(),
		`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = 'bulkhead_app'`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	var sum time.Duration
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
		if err != nil {
			continue // ended since
		}
		ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		sum += time.Duration(ns)
	}
	return sum
}
