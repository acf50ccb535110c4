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
// has closed it, idle connections of the pools with the fewest recent uses
// are closed for those who wait (and, while they do, a few ahead of them),
// and a request that gets no connection within Config.AcquireTimeout fails
// with isolation.ErrUnavailable.
package database

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// Server is one PostgreSQL server tenant databases can be placed on: an
// item of isolation.database.servers.
type Server struct {
	Name string `koanf:"name"`
	// URL is the serving role's DSN of the server's control database;
	// a tenant database is reached with the database name replaced. Empty
	// in a process that does not serve.
	URL string `koanf:"url"`
	// MigrateURL is an owner-capable DSN of the same database, for Setup,
	// provisioning and migrations. It must reach PostgreSQL directly: its
	// sessions hold SET ROLE. Empty in a process that does not provision.
	MigrateURL string `koanf:"migrate_url"`
}

// Config configures the strategy. Its koanf-tagged fields are the keys
// under isolation.database; the others are filled from isolation.Deps by
// Descriptor.New.
type Config struct {
	// MaxConnections caps the open connections of all tenant pools of the
	// process together, idle ones included.
	MaxConnections int `koanf:"max_connections"`
	// AcquireTimeout is how long Run waits for a tenant connection
	// before it answers isolation.ErrUnavailable (503 with Retry-After).
	AcquireTimeout time.Duration `koanf:"acquire_timeout"`
	// IdleTimeout closes tenant pools, and connections, unused this long.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// Servers lists where tenant databases live; empty in the
	// configuration means the server of database.url.
	Servers []Server `koanf:"servers"`

	// MaxPools bounds the tenant pools kept open; 0 means four per
	// connection of the budget. Least recently used unused pools close
	// first.
	MaxPools int `koanf:"-"`
	// PoolConfig turns a serving DSN into a pool configuration (query exec
	// mode for the pooler in front of PostgreSQL); nil: pgxpool.ParseConfig.
	PoolConfig func(dsn string) (*pgxpool.Config, error) `koanf:"-"`
	// Directory is the control plane's record of the strategy's tenants:
	// placement counts tenants per server, and Verify finds the tenant
	// databases there.
	Directory Directory `koanf:"-"`
	// Home is the connection configuration of the control-plane server,
	// whose version verify.All checks: Verify skips a server at the same
	// address. nil checks every server.
	Home *pgconn.Config `koanf:"-"`
	// System makes Setup create the system role on every server too.
	System bool `koanf:"-"`
	// Logger receives what the strategy cannot return: a server found down
	// while others work. nil discards it.
	Logger *slog.Logger `koanf:"-"`
}

// Directory is what the strategy reads of the control plane. app/control
// implements it; the strategy never reads the control plane's tables
// itself.
type Directory interface {
	// CountByServer counts the tenants of strategy name per server they
	// are placed on.
	CountByServer(ctx context.Context, strategy string) (map[string]int64, error)
	// Placed lists the tenants of strategy that hold storage (active and
	// suspended ones), by server and id; none before the control plane is
	// migrated.
	Placed(ctx context.Context, strategy string) ([]isolation.Tenant, error)
}

// Descriptor describes the strategy to the registry: its configuration
// under isolation.database, built with the server of database.url when
// it lists no servers.
var Descriptor = isolation.Descriptor{
	Name:    isolation.Database,
	Summary: "a database per tenant, on one of several servers",
	Config: func() isolation.Config {
		return &Config{MaxConnections: 50, AcquireTimeout: 2 * time.Second, IdleTimeout: 5 * time.Minute, Servers: []Server{}}
	},
	New: func(d isolation.Deps, c isolation.Config) (isolation.Strategy, error) {
		cfg := *c.(*Config)
		if len(cfg.Servers) == 0 {
			cfg.Servers = []Server{{Name: DefaultServer, URL: d.URL, MigrateURL: d.MigrateURL}}
		}
		dir, ok := d.Control.(Directory)
		if !ok {
			return nil, fmt.Errorf("the control plane (%T) does not implement database.Directory", d.Control)
		}
		cfg.Directory, cfg.PoolConfig, cfg.System, cfg.Logger = dir, d.PoolConfig, d.System, d.Logger
		for _, p := range []*pgxpool.Pool{d.App, d.Owner} {
			if p != nil {
				cfg.Home = &p.Config().ConnConfig.Config
				break
			}
		}
		s, err := New(cfg)
		if err != nil {
			return nil, &isolation.ConfigError{Key: "servers", Msg: err.Error()}
		}
		return s, nil
	},
}

// serverName is what a server's name may be: it is stored per tenant and
// shown in findings, never put in SQL.
var serverName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Validate reports every bad value of c at once (isolation.Config).
func (c *Config) Validate() error {
	var e isolation.ConfigErrors
	if c.MaxConnections < 1 {
		e.Add("max_connections", "must be at least 1, not %d", c.MaxConnections)
	}
	for key, d := range map[string]time.Duration{"acquire_timeout": c.AcquireTimeout, "idle_timeout": c.IdleTimeout} {
		if d <= 0 {
			e.Add(key, "must be a positive duration such as 2s, not %s", d)
		}
	}
	slices.SortFunc(e, func(a, b *isolation.ConfigError) int { return strings.Compare(a.Key, b.Key) })
	dsn := func(key, v string) {
		if v == "" {
			return
		}
		if _, err := pgx.ParseConfig(v); err != nil {
			e.Add(key, "not a valid PostgreSQL connection string")
		}
	}
	seen := map[string]bool{}
	for i, s := range c.Servers {
		key := fmt.Sprintf("servers[%d]", i)
		switch {
		case !serverName.MatchString(s.Name):
			e.Add(key+".name", "%q must be 1-63 characters of a-z, 0-9 and -, starting with a letter", s.Name)
		case seen[s.Name]:
			e.Add(key+".name", "%q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.URL == "" {
			e.Add(key+".url", "required")
		}
		dsn(key+".url", s.URL)
		dsn(key+".migrate_url", s.MigrateURL)
	}
	return e.Err()
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
// tenant migrations and move fence: a change to either names a new
// template.
func TemplateName() string {
	return "bulkhead_tpl_" + migrations.Tenant.Hash() + "_f" + isolation.FenceDatabaseVersion()
}

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
	// Dials is the number of tenant connections dialled so far, each
	// with a budget slot: the cold starts requests paid for.
	Dials uint64
}

// Stats returns the state of the tenant pools and their budget.
func (s *Strategy) Stats() Stats {
	used, high, waiting := s.budget.stats()
	return Stats{MaxConnections: s.cfg.MaxConnections, Open: used, HighWater: high, Waiting: waiting, Pools: s.pools.len(), Dials: s.budget.dials.Load()}
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
