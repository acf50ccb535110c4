package rls_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// BenchmarkOneReadShapes takes a tenant-bound point read apart, one layer
// at a time, on one connection: the statement alone in autocommit (RLS
// shows it no row: the cost of the statement, not of the answer); in
// BEGIN … COMMIT, three round trips; as a OneRead run (one round trip with
// the binding); with the server's three bounds; and with the move fence,
// as the server sends it. baseline_bounded is the bounded one-read without
// tenancy (the bench's baseline: the bounds alone, as a superuser, whom no
// policy applies to), to set the binding, the policy and the fence
// against. Beside wall time each reports backend-µs/op, the CPU time the
// serving backend spent per read (pgtest.BackendCPU): what the database
// does for each layer, which other work on a busy machine does not move.
func BenchmarkOneReadShapes(b *testing.B) {
	f := setup(b, 1, nil)
	ctx := context.Background()
	const q = `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`
	read := func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, q, f.a.ID).Scan(new(string))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}
	f.db.Exec(b, `INSERT INTO bulkhead.tenants (id, slug, name, isolation, status) VALUES ($1, $2, $2, 'rls', 'active')`, f.a.ID, f.a.Slug)
	fence, err := isolation.FenceStep(f.a)
	if err != nil {
		b.Fatal(err)
	}
	bounds := isolation.Bounds{Statement: 30 * time.Second, Lock: 5 * time.Second, IdleInTransaction: time.Minute}
	admin := pgtest.Pool(b, f.db.AdminURL)
	baseline := func() error {
		conn, err := admin.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		rctx := isolation.OneRead(isolation.WithBounds(ctx, bounds))
		return isolation.RunOn(rctx, conn.Conn(), bounds.Steps(), read)
	}
	for _, bc := range []struct {
		name string
		pool *pgxpool.Pool
		run  func() error
	}{
		{"autocommit", f.app, func() error {
			if err := f.app.QueryRow(ctx, q, f.a.ID).Scan(new(string)); !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return nil
		}},
		{"begin_commit", f.app, func() error { return pgx.BeginTxFunc(ctx, f.app, pgx.TxOptions{}, read) }},
		{"baseline_bounded", admin, baseline},
		{"oneread", f.app, func() error { return f.strategy.Run(isolation.OneRead(ctx), f.a, read) }},
		{"oneread_bounded", f.app, func() error {
			return f.strategy.Run(isolation.OneRead(isolation.WithBounds(ctx, bounds)), f.a, read)
		}},
		{"oneread_bounded_fenced", f.app, func() error {
			return f.strategy.Run(isolation.WithSteps(isolation.OneRead(isolation.WithBounds(ctx, bounds)), fence), f.a, read)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if err := bc.run(); err != nil {
				b.Fatal(err)
			}
			before, _ := pgtest.PoolBackendCPU(ctx, bc.pool)
			b.ResetTimer()
			for range b.N {
				if err := bc.run(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if after, ok := pgtest.PoolBackendCPU(ctx, bc.pool); ok && after > before {
				b.ReportMetric(float64(after-before)/float64(time.Microsecond)/float64(b.N), "backend-µs/op")
			}
		})
	}
}
