package database_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
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

// Setup says, naming the server, when a server does not preload PL/pgSQL:
// the move fence's function then loads it in every new tenant connection.
// The test servers do not preload it.
func TestSetupSaysWhenPLpgSQLIsNotPreloaded(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	cfg, pools := pgtest.OpenPools(t, db)
	var logged apitest.Logs
	s, err := database.New(database.Config{
		Servers:        []database.Server{{Name: "east", URL: db.AppURL, MigrateURL: db.MigrateURL}},
		MaxConnections: 2,
		AcquireTimeout: pgtest.AcquireTimeout,
		PoolConfig: func(dsn string) (*pgxpool.Config, error) {
			return postgres.PoolConfig(dsn, cfg.Database.Pooler, 0)
		},
		Directory: control.NewDirectory(pools),
		Logger:    slog.New(slog.NewJSONHandler(&logged, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	strategytest.CloseAtEnd(t, "the strategy", s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	said := func(l map[string]any) bool {
		msg, _ := l["msg"].(string)
		return strings.Contains(msg, "shared_preload_libraries") && l["server"] == "east"
	}
	lines := logged.Lines()
	if !slices.ContainsFunc(lines, said) {
		t.Errorf("Setup on a server without plpgsql preloaded logged %v; want a line naming shared_preload_libraries and server east", lines)
	}
	// Setup runs again at tenant creations and moves: the process has
	// said it already.
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range logged.Lines() {
		if said(l) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("after a second Setup the process said %d times that the server does not preload plpgsql, want once", n)
	}
}
