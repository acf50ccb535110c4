package rls_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

// The shared-tables strategy meets the seam contract.
func TestExercise(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, exerciseEnv)
}

// exerciseEnv is the strategy as the server builds it (its pools
// configured by app/postgres), on a database of its own.
func exerciseEnv(t *testing.T) strategytest.Env {
	t.Helper()
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
	return strategytest.Env{Strategy: rls.New(app, pools.Owner), Admin: pgtest.Pool(t, db.AdminURL), Conns: conns}
}
