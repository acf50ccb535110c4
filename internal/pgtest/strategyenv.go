package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

// OpenPools is db's configuration (Config) and the server's pools on it
// (postgres.Open), closed when tb ends.
func OpenPools(tb testing.TB, db *DB) (*config.Config, *postgres.Pools) {
	tb.Helper()
	cfg := Config(db)
	pools, err := postgres.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pools.Close)
	return cfg, pools
}

// StrategyEnv is the strategytest.Env of a strategy served as the server
// serves it, on db: OpenPools, and a serving pool of conns connections as
// the serving role, configured by postgres.PoolConfig for the configured
// pooler and closed (with a deadline) when tb ends. build makes the
// strategy from them (and runs its Setup, if it needs one); an error from
// it fails tb. Admin is a superuser's pool on db, and Conns is conns.
func StrategyEnv(tb testing.TB, db *DB, conns int, build func(cfg *config.Config, pools *postgres.Pools, app *pgxpool.Pool) (isolation.Strategy, error)) strategytest.Env {
	tb.Helper()
	cfg, pools := OpenPools(tb, db)
	pc, err := postgres.PoolConfig(db.AppURL, cfg.Database.Pooler, conns)
	if err != nil {
		tb.Fatal(err)
	}
	app, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		tb.Fatal(err)
	}
	strategytest.CloseAtEnd(tb, "the serving pool", app.Close)
	s, err := build(cfg, pools, app)
	if err != nil {
		tb.Fatal(err)
	}
	return strategytest.Env{Strategy: s, Admin: Pool(tb, db.AdminURL), Conns: conns}
}
