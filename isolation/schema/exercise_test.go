package schema_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

// The schema-per-tenant strategy meets the seam contract.
func TestExercise(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		return pgtest.StrategyEnv(t, pgtest.New(t), 3, func(_ *config.Config, pools *postgres.Pools, app *pgxpool.Pool) (isolation.Strategy, error) {
			s := schema.New(app, pools.Owner)
			strategytest.CloseAtEnd(t, "the strategy", s.Close)
			return s, s.Setup(context.Background())
		})
	})
}
