package database_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

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

// Setup says, naming the server, when a server does not preload PL/pgSQL:
// the move fence's function then loads it in every new tenant connection.
// The test servers do not preload it.
func TestSetupSaysWhenPLpgSQLIsNotPreloaded(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	cfg, pools := pgtest.OpenPools(t, db)
	var logged syncBuffer
	s, err := database.New(database.Config{
		Servers:        []database.Server{{Name: "east", URL: db.AppURL, MigrateURL: db.MigrateURL}},
		MaxConnections: 2,
		AcquireTimeout: pgtest.AcquireTimeout,
		PoolConfig: func(dsn string) (*pgxpool.Config, error) {
			return postgres.PoolConfig(dsn, cfg.Database.Pooler, 0)
		},
		Directory: control.NewDirectory(pools),
		Logger:    slog.New(slog.NewTextHandler(&logged, nil)),
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
	if out := logged.String(); !strings.Contains(out, "shared_preload_libraries") || !strings.Contains(out, "server=east") {
		t.Errorf("Setup on a server without plpgsql preloaded logged:\n%s\nwant a line naming shared_preload_libraries and server east", out)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
