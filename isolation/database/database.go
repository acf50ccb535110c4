// Package database is the database-per-tenant isolation strategy: every
// tenant has a PostgreSQL database of its own, cloned from a pre-migrated
// template, on one of several servers. The tenant tables keep tenant_id and
// their Row-Level Security policy, so inside its database a tenant is still
// held by the same policy as on shared tables: two walls.
//
// Requests reach a tenant's database through a pgx pool of its own, opened
// on first use and kept in an LRU. One budget caps the connections of all
// tenant pools of the process together (Config.MaxConnections): a slot is
// taken before a connection is dialled and given back only when the server
// has closed it, idle connections of least recently used pools are closed
// for those who wait, and a request that gets no connection within
// Config.AcquireTimeout fails with isolation.ErrUnavailable.
package database

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// schema holds the tenant tables inside each tenant database.
const schema = "public"

// searchPath is the binding's search_path: the tenant tables, then pg_temp
// (tenant databases give no TEMPORARY anyway).
var searchPath = isolation.SearchPath(schema)

// DefaultServer names the one server of a deployment that lists none: the
// server of database.url.
const DefaultServer = "default"

// Server is one PostgreSQL server tenant databases can be placed on.
type Server struct {
	Name string
	// URL is the serving role's DSN of the server's control database;
	// a tenant database is reached with the database name replaced. Empty
	// in a process that does not serve.
	URL string
	// MigrateURL is an owner-capable DSN of the same database, for Setup,
	// provisioning and migrations. It must reach PostgreSQL directly: its
	// sessions hold SET ROLE. Empty in a process that does not provision.
	MigrateURL string
}

// Config configures the strategy.
type Config struct {
	// Servers lists where tenant databases live; at least one.
	Servers []Server
	// MaxConnections caps the open connections of all tenant pools of the
	// process together, idle ones included.
	MaxConnections int
	// AcquireTimeout is how long Run waits for a tenant connection.
	AcquireTimeout time.Duration
	// IdleTimeout closes tenant pools, and connections, unused this long.
	IdleTimeout time.Duration
	// MaxPools bounds the tenant pools kept open; 0 means four per
	// connection of the budget. Least recently used unused pools close
	// first.
	MaxPools int
	// PoolConfig turns a serving DSN into a pool configuration (query exec
	// mode for the pooler in front of PostgreSQL); nil: pgxpool.ParseConfig.
	PoolConfig func(dsn string) (*pgxpool.Config, error)
	// Control is a pool on the control-plane database that may read
	// bulkhead.tenants: placement counts tenants per server, and Verify
	// finds the tenant databases there.
	Control *pgxpool.Pool
	// System makes Setup create the system role on every server too.
	System bool
	// Logger receives what the strategy cannot return: a server found down
	// while others work. nil discards it.
	Logger *slog.Logger
}

// Strategy is the database-per-tenant strategy. It is safe for concurrent
// use; Close releases its pools.
type Strategy struct {
	cfg       Config
	servers   map[string]*server
	order     []*server // as configured
	budget    *budget
	pools     *cache
	ownWait   time.Duration // awaitOwn's bound: ownWait, but for tests
	log       *slog.Logger
	closeOnce sync.Once
}

var _ isolation.Strategy = (*Strategy)(nil)

// New returns the strategy cfg describes. It contacts no server; an error
// means cfg is invalid.
func New(cfg Config) (*Strategy, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("no server for tenant databases")
	}
	if cfg.MaxConnections < 1 {
		return nil, fmt.Errorf("max connections %d: want at least 1", cfg.MaxConnections)
	}
	if cfg.AcquireTimeout <= 0 {
		cfg.AcquireTimeout = 2 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.MaxPools <= 0 {
		cfg.MaxPools = max(4*cfg.MaxConnections, 16)
	}
	if cfg.PoolConfig == nil {
		cfg.PoolConfig = pgxpool.ParseConfig
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Strategy{cfg: cfg, servers: map[string]*server{}, budget: newBudget(cfg.MaxConnections), log: log, ownWait: ownWait}
	for _, sc := range cfg.Servers {
		if sc.Name == "" {
			return nil, errors.New("a server has no name")
		}
		if s.servers[sc.Name] != nil {
			return nil, fmt.Errorf("server %s is listed twice", sc.Name)
		}
		srv := &server{name: sc.Name}
		if sc.URL != "" {
			pc, err := cfg.PoolConfig(sc.URL)
			if err != nil {
				return nil, fmt.Errorf("server %s: url: %w", sc.Name, err)
			}
			srv.app = pc
		}
		if sc.MigrateURL != "" {
			cc, err := pgx.ParseConfig(sc.MigrateURL)
			if err != nil {
				return nil, fmt.Errorf("server %s: migrate_url: %w", sc.Name, err)
			}
			srv.owner = cc
		}
		s.servers[sc.Name] = srv
		s.order = append(s.order, srv)
	}
	s.pools = newCache(s.budget, cfg.IdleTimeout, cfg.MaxPools, s.poolConfig)
	return s, nil
}

// DBName returns the name of the database of tenant id: t_ and the 32 hex
// digits of the UUID, so that it needs no quoting and carries no input.
func DBName(id uuid.UUID) string { return "t_" + hex.EncodeToString(id[:]) }

// TemplateName returns the name of the template database for the current
// tenant migrations: a change to them names a new template.
func TemplateName() string { return "bulkhead_tpl_" + migrations.Tenant.Hash() }

// ConnectionBudget is Config.MaxConnections: the tenant connections of
// every tenant of the process together (isolation.ConnectionBudgeter).
func (s *Strategy) ConnectionBudget() int { return s.cfg.MaxConnections }

// Name returns isolation.Database.
func (s *Strategy) Name() string { return isolation.Database }

// Stats describes the tenant pools at one moment.
type Stats struct {
	// MaxConnections is the budget.
	MaxConnections int
	// Open is the number of tenant connections open (or being opened or
	// closed: each holds a slot from before it is dialled until the server
	// has closed it).
	Open int
	// HighWater is the most tenant connections open at once so far.
	HighWater int
	// Waiting is the number of connection attempts waiting for a slot.
	Waiting int
	// Pools is the number of tenant pools open.
	Pools int
}

// Stats returns the state of the tenant pools and their budget.
func (s *Strategy) Stats() Stats {
	used, high, waiting := s.budget.stats()
	return Stats{MaxConnections: s.cfg.MaxConnections, Open: used, HighWater: high, Waiting: waiting, Pools: s.pools.len()}
}

// HasServer reports whether name is one of the configured servers.
func (s *Strategy) HasServer(name string) bool { return s.servers[name] != nil }

// HasPool reports whether a pool of t's database is open.
func (s *Strategy) HasPool(t isolation.Tenant) bool {
	srv, db, err := s.locate(t)
	return err == nil && s.pools.has(poolKey{srv.name, db})
}

// Close closes every tenant pool and the servers' own pools, waiting until
// their connections are closed. Runs still in progress keep their pool
// until they end. It is idempotent.
func (s *Strategy) Close() {
	s.closeOnce.Do(func() {
		s.pools.close()
		for _, srv := range s.order {
			srv.close()
		}
	})
}
