package harness

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
