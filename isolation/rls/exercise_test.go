package rls_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
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
	return pgtest.StrategyEnv(t, pgtest.New(t), 3, func(_ *config.Config, pools *postgres.Pools, app *pgxpool.Pool) (isolation.Strategy, error) {
		return rls.New(app, pools.Owner), nil
	})
}
