package harness

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
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
		const conns = 3
		db := pgtest.New(t)
		db.Exec(t, noRLS())
		cfg := pgtest.Config(db)
		pools, err := postgres.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pools.Close)
		pc, err := postgres.PoolConfig(db.AppURL, cfg.Database.Pooler, conns)
		if err != nil {
			t.Fatal(err)
		}
		app, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		strategytest.CloseAtEnd(t, "the serving pool", app.Close)
		return strategytest.Env{Strategy: &noTenancy{Strategy: rls.New(app, pools.Owner), pool: app}, Admin: pgtest.Pool(t, db.AdminURL), Conns: conns}
	}, strategytest.NoWalls())
}
