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
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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

// searchPath is the binding's search_path: the tenant tables, then the
// session's temporary schema, explicitly last, so that no temporary table
// can shadow a tenant table (tenant databases give no TEMPORARY anyway).
var searchPath = "SET LOCAL search_path = " + pgx.Identifier{schema}.Sanitize() + ", pg_temp"

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

// poolConfig is the configuration of the pool of one tenant database:
// the server's serving configuration with the database replaced, every
// connection dialled through the budget.
func (s *Strategy) poolConfig(key poolKey, p *tenantPool) (*pgxpool.Config, error) {
	srv := s.servers[key.server]
	if srv == nil || srv.app == nil {
		return nil, isolation.ErrNoApp
	}
	cfg := srv.app.Copy()
	cfg.ConnConfig.Database = key.db
	cfg.MaxConns = int32(s.cfg.MaxConnections)
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	cfg.MaxConnIdleTime = s.cfg.IdleTimeout
	cfg.HealthCheckPeriod = min(max(s.cfg.IdleTimeout/2, 100*time.Millisecond), time.Minute)
	// Bounds a connection attempt, the wait for a slot included. The wait
	// of a Run ends with its AcquireTimeout, so the attempt keeps
	// connectAllowance for the server itself: a timeout then means the
	// server did not answer, never that the budget was busy.
	cfg.ConnConfig.ConnectTimeout = s.cfg.AcquireTimeout + connectAllowance
	cfg.ConnConfig.DialFunc = s.budget.dialer(p, cfg.ConnConfig.DialFunc)
	// No AfterRelease: with one, pgxpool releases in a goroutine of its
	// own, and awaitOwn could not be woken once the connection is idle.
	// release does that hook's work.
	return cfg, nil
}

// locate returns t's server and database name. The name is derived from
// t.ID; a recorded placement that differs from it is refused, so that no
// record can point the serving role at a database that is not t's.
func (s *Strategy) locate(t isolation.Tenant) (*server, string, error) {
	if t.ID == uuid.Nil {
		return nil, "", isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	if t.Placement != "" && t.Placement != db {
		return nil, "", fmt.Errorf("tenant %s: placement %q is not its database %s", t, t.Placement, db)
	}
	if t.Server == "" && len(s.order) == 1 {
		return s.order[0], db, nil
	}
	srv := s.servers[t.Server]
	if srv == nil {
		return nil, "", fmt.Errorf("tenant %s: server %q is not configured in isolation.database.servers", t, t.Server)
	}
	return srv, db, nil
}

// Run runs fn in a transaction of t's database bound to t. It waits at
// most AcquireTimeout for a connection and then returns an error wrapping
// isolation.ErrUnavailable; so does it at once while t's server is known
// to be down. A pooled connection found dead by its BEGIN (the server
// restarted) empties the pool of t and is replaced once: nothing ran yet.
// The connection, and with it its slot of the budget, is released in a
// deferred call: a panic in fn returns both.
func (s *Strategy) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	opts, err := isolation.BindRun(ctx, t.ID, searchPath)
	if err != nil {
		return err
	}
	srv, db, err := s.locate(t)
	if err != nil {
		return err
	}
	if srv.app == nil {
		return isolation.ErrNoApp
	}
	if srv.down() {
		return fmt.Errorf("%w: server %s is down", isolation.ErrUnavailable, srv.name)
	}
	p, err := s.pools.get(poolKey{srv.name, db})
	if err != nil {
		return err
	}
	defer s.pools.put(p)
	actx, cancel := context.WithTimeout(ctx, s.cfg.AcquireTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		s.awaitOwn(actx, p)
		conn, err := p.pool.Acquire(context.WithValue(actx, acquireKey{}, actx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if srv.noteDown(err) {
				s.log.Warn("tenant database server unreachable", "server", srv.name, "err", err)
			}
			return fmt.Errorf("%w: tenant %s: %w", isolation.ErrUnavailable, t, err)
		}
		retry, err := s.runOn(ctx, p, conn, opts, fn, attempt == 0)
		if retry {
			p.pool.Reset() // its other idle connections died with this one
			continue
		}
		if isolation.StalePlan(err) {
			// The tenant's tables changed under the pool's cached
			// statements (a migration ran): start its connections afresh,
			// and let the client retry.
			p.pool.Reset()
			return fmt.Errorf("%w: tenant %s: %w", isolation.ErrUnavailable, t, err)
		}
		return err
	}
}

// runOn runs fn in a transaction of conn and releases conn, whatever
// happens, panics included. It reports retry when conn was found dead by
// the BEGIN and mayRetry allows another attempt: nothing ran yet.
func (s *Strategy) runOn(ctx context.Context, p *tenantPool, conn *pgxpool.Conn, opts pgx.TxOptions, fn func(pgx.Tx) error, mayRetry bool) (retry bool, err error) {
	defer s.release(p, conn)
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return mayRetry && conn.Conn().IsClosed() && ctx.Err() == nil, err
	}
	return false, runTx(ctx, tx, fn)
}

// connectAllowance is how long a connection attempt may take once it holds
// a slot of the budget: dial, TLS, authentication.
const connectAllowance = 5 * time.Second

// ownWait bounds how long a Run waits for a connection of its own tenant's
// pool to come free before it dials one.
const ownWait = 3 * time.Millisecond

// awaitOwn waits, while the budget has no free slot and every connection of
// p is busy, up to s.ownWait for one of them to come free. Dialling instead
// would evict another tenant's idle connection, and that tenant would dial
// again on its next request: with more active tenants than the budget has
// connections, the pools would keep trading slots, each trade the price of
// a backend start. It wakes when p's connection is back (release) or a
// slot is free (budget.give), not on a timer.
func (s *Strategy) awaitOwn(ctx context.Context, p *tenantPool) {
	var timeout <-chan time.Time
	for {
		// Taken before the checks, so a release between them and the
		// wait still wakes it.
		released, freed := p.released.C(), s.budget.freed.C()
		st := p.pool.Stat()
		if st.IdleConns() > 0 || st.TotalConns() == 0 || !s.budget.full() {
			return
		}
		if timeout == nil {
			t := time.NewTimer(s.ownWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-released:
		case <-freed:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// release gives conn, of p, back. A surplus connection released while
// another pool waits for a slot closes, so that the slot goes where it is
// needed. A pool's last connection stays: the waiters evict idle
// connections least recently used first, and closing a busy tenant's only
// connection would make it dial again at once, churning the budget. A
// connection that stays is idle in p when release returns, and the Runs
// waiting for one in awaitOwn are woken.
func (s *Strategy) release(p *tenantPool, conn *pgxpool.Conn) {
	pc := conn.Conn().PgConn()
	if !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I' &&
		p.pool.Stat().TotalConns() > 1 && s.budget.othersWait(p) {
		raw := conn.Hijack()
		s.pools.goClose(raw)
		return
	}
	conn.Release() // destroys a closed, busy or in-transaction one itself
	p.released.notify()
}

// runTx runs fn in tx and commits when it returns nil, as pgx.BeginTxFunc
// does once the transaction has begun.
func runTx(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) (err error) {
	defer func() {
		if rerr := tx.Rollback(ctx); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) && err == nil {
			err = rerr
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Provision creates t's database on the server with the fewest tenants
// (skipping servers that cannot be reached), cloned from the template, and
// lets only the serving role connect to it.
func (s *Strategy) Provision(ctx context.Context, t isolation.Tenant) (isolation.Tenant, error) {
	if t.ID == uuid.Nil {
		return t, isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	servers, err := s.byLoad(ctx)
	if err != nil {
		return t, err
	}
	var errs []error
	for _, srv := range servers {
		srv.placing.Add(1)
		err := s.create(ctx, srv, db)
		srv.placing.Add(-1)
		if err == nil {
			t.Strategy, t.Server, t.Placement = isolation.Database, srv.name, db
			return t, nil
		}
		if !(unreachable(err) || errors.Is(err, errNoTemplate)) || ctx.Err() != nil {
			return t, fmt.Errorf("server %s: %w", srv.name, err)
		}
		s.log.Warn("cannot place a tenant on this server; trying the next", "server", srv.name, "tenant", t.Slug, "err", err)
		errs = append(errs, fmt.Errorf("server %s: %w", srv.name, err))
	}
	return t, fmt.Errorf("%w: no server can take it: %w", isolation.ErrUnavailable, errors.Join(errs...))
}

// byLoad returns the servers that may provision, fewest tenants first
// (counting placements in progress in this process), ties in configured
// order.
func (s *Strategy) byLoad(ctx context.Context) ([]*server, error) {
	if s.cfg.Control == nil {
		return nil, errors.New("no control-plane pool to count tenants per server")
	}
	rows, err := s.cfg.Control.Query(ctx,
		`SELECT server, count(*) FROM bulkhead.tenants WHERE isolation = $1 AND server <> '' GROUP BY server`,
		isolation.Database)
	if err != nil {
		return nil, fmt.Errorf("count tenants per server: %w", err)
	}
	count := map[string]int64{}
	var (
		name string
		n    int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error { count[name] = n; return nil }); err != nil {
		return nil, fmt.Errorf("count tenants per server: %w", err)
	}
	var out []*server
	load := map[*server]int64{}
	for _, srv := range s.order {
		if srv.owner == nil {
			continue
		}
		load[srv] = count[srv.name] + srv.placing.Load()
		out = append(out, srv)
	}
	if len(out) == 0 {
		return nil, isolation.ErrNoOwner
	}
	slices.SortStableFunc(out, func(a, b *server) int { return int(load[a] - load[b]) })
	return out, nil
}

// create clones the template into db on srv. Connections are refused
// until PUBLIC's CONNECT and TEMPORARY are revoked and CONNECT is granted
// to the serving role. On error it drops what it created.
func (s *Strategy) create(ctx context.Context, srv *server, db string) error {
	owner, err := srv.ownerDB()
	if err != nil {
		return err
	}
	ident := pgx.Identifier{db}.Sanitize()
	_, err = owner.Exec(ctx, `CREATE DATABASE `+ident+` TEMPLATE `+pgx.Identifier{TemplateName()}.Sanitize()+
		` OWNER `+pgx.Identifier{isolation.OwnerRole}.Sanitize()+` ALLOW_CONNECTIONS false`)
	if err != nil {
		if missingDatabase(err) {
			return fmt.Errorf("template %s: %w", TemplateName(), errNoTemplate)
		}
		return fmt.Errorf("create database %s: %w", db, err)
	}
	// One simple-protocol message: an implicit transaction, all or nothing.
	_, err = owner.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+ident+` FROM PUBLIC; `+
		`GRANT CONNECT ON DATABASE `+ident+` TO `+pgx.Identifier{isolation.AppRole}.Sanitize()+`; `+
		`ALTER DATABASE `+ident+` WITH ALLOW_CONNECTIONS true`)
	if err != nil {
		err = fmt.Errorf("grant on database %s: %w", db, err)
		if derr := s.drop(context.WithoutCancel(ctx), srv, db); derr != nil {
			err = errors.Join(err, derr)
		}
		return err
	}
	return nil
}

// Deprovision closes t's pool and drops its database, ending whatever
// sessions it still has. With no server recorded it drops the database
// wherever it is.
func (s *Strategy) Deprovision(ctx context.Context, t isolation.Tenant) error {
	if t.ID == uuid.Nil {
		return isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	if t.Placement != "" && t.Placement != db {
		return fmt.Errorf("placement %q is not its database %s", t.Placement, db)
	}
	servers := s.order
	if t.Server != "" {
		srv := s.servers[t.Server]
		if srv == nil {
			return fmt.Errorf("server %q is not configured in isolation.database.servers", t.Server)
		}
		servers = []*server{srv}
	}
	for _, srv := range servers {
		s.pools.remove(poolKey{srv.name, db})
		if err := s.drop(ctx, srv, db); err != nil {
			return err
		}
	}
	return nil
}

// drop drops db on srv, if it exists, forcing its sessions off: it closes
// the database to new connections, terminates its client sessions and
// drops it, which waits for them to end and stops autovacuum there.
//
// Not DROP DATABASE … WITH (FORCE): run by a role that is not a superuser,
// it refuses whenever an autovacuum worker is in the database, since the
// worker belongs to no role the owner is a member of.
func (s *Strategy) drop(ctx context.Context, srv *server, db string) error {
	owner, err := srv.ownerDB()
	if err != nil {
		return err
	}
	ident := pgx.Identifier{db}.Sanitize()
	_, err = owner.Exec(ctx, `ALTER DATABASE `+ident+` ALLOW_CONNECTIONS false`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("close database %s on server %s: %w", db, srv.name, err)
	}
	if _, err := owner.Exec(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()`, db); err != nil {
		return fmt.Errorf("end the sessions of database %s on server %s: %w", db, srv.name, err)
	}
	if _, err := owner.Exec(ctx, `DROP DATABASE IF EXISTS `+ident); err != nil {
		return fmt.Errorf("drop database %s on server %s: %w", db, srv.name, err)
	}
	return nil
}

// Migrate brings t's database to the tenant migration head, as the owner,
// and grants the serving role DML on its tenant tables again. It returns
// the version reached.
func (s *Strategy) Migrate(ctx context.Context, t isolation.Tenant) (int64, error) {
	srv, db, err := s.locate(t)
	if err != nil {
		return 0, err
	}
	conn, err := srv.connectOwner(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("connect to %s on server %s: %w", db, srv.name, err)
	}
	defer conn.Close(context.Background())
	v, err := isolation.TenantVersion(ctx, conn, schema)
	if err != nil {
		return 0, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
	}
	if v != migrations.Tenant.Head() {
		cfg, err := srv.ownerConfig(db)
		if err != nil {
			return v, err
		}
		if v, err = isolation.MigrateTenantTables(ctx, cfg, schema); err != nil {
			return v, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
		}
	}
	if err := isolation.GrantTenantTables(ctx, conn, schema, isolation.AppRole); err != nil {
		return v, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
	}
	return v, nil
}

// Ready reports each server that cannot serve — unreachable, or without
// the template of the current migrations — as degraded, and fails only
// when no server can serve.
func (s *Strategy) Ready(ctx context.Context) (isolation.Degraded, error) {
	type result struct {
		srv *server
		err error
	}
	results := make(chan result, len(s.order))
	for _, srv := range s.order {
		go func() { results <- result{srv, s.ready(ctx, srv)} }()
	}
	degraded := isolation.Degraded{}
	var errs []error
	for range s.order {
		r := <-results
		if r.err != nil {
			degraded["server "+r.srv.name] = r.err.Error()
			errs = append(errs, fmt.Errorf("server %s: %w", r.srv.name, r.err))
		}
	}
	if len(errs) == len(s.order) {
		// ready's errors are worded for anyone: no database text.
		return nil, &isolation.NotReadyError{Reason: errors.Join(errs...).Error()}
	}
	if len(degraded) == 0 {
		return nil, nil
	}
	return degraded, nil
}

// errNoTemplate says why a reachable server is not ready.
var errNoTemplate = errors.New("the template database of the current tenant migrations is missing: run bulkhead migrate")

// ready checks one server. Its errors are worded for /readyz: they carry
// no database error text.
func (s *Strategy) ready(ctx context.Context, srv *server) error {
	q, err := srv.reader()
	if err != nil {
		return err
	}
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, TemplateName()).Scan(&ok); err != nil {
		if srv.noteDown(err) || ctx.Err() != nil {
			return errors.New("unreachable")
		}
		s.log.Warn("readiness of tenant database server", "server", srv.name, "err", err)
		return errors.New("cannot read its catalog")
	}
	srv.downUntil.Store(0)
	if !ok {
		return errNoTemplate
	}
	return nil
}

func missingDatabase(err error) bool {
	var code interface{ SQLState() string }
	return errors.As(err, &code) && code.SQLState() == "3D000" // invalid_catalog_name
}
