package schema_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

// The schema-per-tenant strategy meets the seam contract.
func TestExercise(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		const conns = 3
		db := pgtest.New(t)
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
		s := schema.New(app, pools.Owner)
		if err := s.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		return strategytest.Env{Strategy: s, Admin: pgtest.Pool(t, db.AdminURL), Conns: conns}
	})
}
