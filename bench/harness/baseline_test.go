package harness

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The baseline's strategy keeps no wall in the database by design, but
// meets the rest of the seam contract, as the strategies it is measured
// against do: provisioning, panic, cancel, retry, concurrent tenants.
func TestBaselineExercise(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		db := pgtest.New(t)
		db.Exec(t, noRLS())
		return pgtest.StrategyEnv(t, db, 3, func(_ *config.Config, pools *postgres.Pools, app *pgxpool.Pool) (isolation.Strategy, error) {
			return &noTenancy{Strategy: rls.New(app, pools.Owner), pool: app}, nil
		})
	}, strategytest.NoWalls())
}

// The baseline reads in one round trip, as the RLS strategy does, with the
// server's bounds: what the bench compares is the tenancy alone.
func TestBaselineReadsInOneRoundTrip(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.Exec(t, noRLS())
	var writes atomic.Int64
	cfg, err := pgxpool.ParseConfig(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.DialFunc = pgtest.CountingDialer(&writes)
	app, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	b := &noTenancy{Strategy: rls.New(app, nil), pool: app}
	ctx := isolation.WithBounds(context.Background(), isolation.Bounds{Statement: time.Second, Lock: time.Second, IdleInTransaction: time.Minute})
	read := func(ctx context.Context) error {
		return b.Run(ctx, isolation.Tenant{}, func(tx pgx.Tx) error {
			var timeout string
			if err := tx.QueryRow(ctx, `SELECT current_setting('statement_timeout')`).Scan(&timeout); err != nil {
				return err
			}
			if timeout != "1s" {
				return fmt.Errorf("statement_timeout %q in the baseline's transaction, want the bound's 1s", timeout)
			}
			return nil
		})
	}
	for _, c := range []struct {
		name string
		ctx  context.Context
		want int64
	}{
		{"one read", isolation.OneRead(ctx), 1},
		{"transaction", ctx, 3}, // BEGIN with the bounds, the statement, COMMIT
	} {
		if err := read(c.ctx); err != nil { // connect and prepare
			t.Fatal(err)
		}
		before := writes.Load()
		if err := read(c.ctx); err != nil {
			t.Fatal(err)
		}
		if n := writes.Load() - before; n != c.want {
			t.Errorf("%s: %d round trips, want %d", c.name, n, c.want)
		}
	}
}
