package database_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

// The database-per-tenant strategy meets the seam contract, its tenant
// pools sharing a budget of three connections.
func TestExercise(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		const budget = 3
		db := pgtest.New(t)
		cfg, pools := pgtest.OpenPools(t, db)
		s, err := database.New(database.Config{
			Servers:        []database.Server{{Name: database.DefaultServer, URL: db.AppURL, MigrateURL: db.MigrateURL}},
			MaxConnections: budget,
			AcquireTimeout: pgtest.AcquireTimeout,
			PoolConfig: func(dsn string) (*pgxpool.Config, error) {
				return postgres.PoolConfig(dsn, cfg.Database.Pooler, 0)
			},
			Directory: control.NewDirectory(pools),
			Logger:    pgtest.Logger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		strategytest.CloseAtEnd(t, "the strategy", s.Close)
		if err := s.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		return strategytest.Env{Strategy: s, Admin: pgtest.Pool(t, db.AdminURL), Conns: budget}
	})
}
