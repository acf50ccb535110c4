// Package postgres opens Bulkhead's connection pools: the serving pool (the
// app role, under Row-Level Security) and the owner pool (DDL and
// provisioning), configured for direct connections or for a transaction-mode
// pooler in front of PostgreSQL.
package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Pools are the process's pools. Either is nil when its DSN is not
// configured: a CLI command needing only one opens only that one.
type Pools struct {
	// App serves requests as the serving role.
	App *pgxpool.Pool
	// Owner provisions and migrates; its sessions act as the owner role.
	Owner *pgxpool.Pool
}

// PoolConfig parses dsn into a pool configuration for the given pooler:
// behind PgBouncer in transaction mode (before 1.21, which cannot keep named
// prepared statements) statements are described with unnamed statements and
// their descriptions cached; directly, they are prepared and cached.
func PoolConfig(dsn, pooler string, maxConns int) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.DefaultQueryExecMode = ExecMode(pooler)
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "bulkhead"
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	// A cancelled request stops its statement in PostgreSQL: a cancel
	// request at once, and should it land before the server began the
	// statement (a cancel then is ignored), the connection is closed
	// after cancelGrace, which sends another.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	return cfg, nil
}

// cancelGrace is how long a cancelled statement may take to end after the
// cancel request before its connection is closed.
const cancelGrace = time.Second

// ExecMode is the pgx query exec mode that works with pooler.
func ExecMode(pooler string) pgx.QueryExecMode {
	if pooler == config.PoolerPgBouncer {
		return pgx.QueryExecModeCacheDescribe
	}
	return pgx.QueryExecModeCacheStatement
}

// Open opens the pools cfg configures. Pools connect lazily: opening one
// contacts no server.
func Open(cfg *config.Config) (*Pools, error) {
	var p Pools
	if cfg.Database.URL != "" {
		pc, err := PoolConfig(cfg.Database.URL, cfg.Database.Pooler, cfg.Database.MaxConnections)
		if err != nil {
			return nil, config.Errorf("database.url", "not a valid PostgreSQL connection string")
		}
		if p.App, err = pgxpool.NewWithConfig(context.Background(), pc); err != nil {
			return nil, fmt.Errorf("open serving pool: %w", err)
		}
	}
	if cfg.Database.MigrateURL != "" {
		// The owner's sessions hold SET ROLE, session state that a
		// transaction-mode pooler would hand to other clients:
		// database.migrate_url must reach PostgreSQL directly.
		pc, err := PoolConfig(cfg.Database.MigrateURL, config.PoolerNone, 4)
		if err != nil {
			p.Close()
			return nil, config.Errorf("database.migrate_url", "not a valid PostgreSQL connection string")
		}
		pc.AfterConnect = isolation.BecomeOwner
		if p.Owner, err = pgxpool.NewWithConfig(context.Background(), pc); err != nil {
			p.Close()
			return nil, fmt.Errorf("open owner pool: %w", err)
		}
	}
	return &p, nil
}

// Close closes the pools.
func (p *Pools) Close() {
	if p.App != nil {
		p.App.Close()
	}
	if p.Owner != nil {
		p.Owner.Close()
	}
}

func newPools(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger) (*Pools, error) {
	p, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(func() {
		p.Close()
		log.Debug("pools closed")
	}))
	return p, nil
}

// Module provides *Pools, closed when the app stops.
var Module = fx.Module("postgres", fx.Provide(newPools))
