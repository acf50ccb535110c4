package isolation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Migrators lends goose owner sessions on one database, one tenant schema
// at a time, and keeps them for the next schema: migrating many schemas
// then starts a backend (fork, authentication, cold catalog caches) per
// concurrent migrator rather than per schema, as a plain SQL script run
// over the same schemas does. It is safe for concurrent use.
//
// Each migrator is a database/sql handle of one connection (goose's
// Provider takes a *sql.DB). Lent for a schema, its session is first put
// back in a known state and pointed at the schema, in one round trip:
// settings reset, session advisory locks released, temporary tables
// dropped, the owner role taken again and search_path set to the schema
// alone (quoted). goose's session advisory lock (LockID) still serialises
// concurrent migrators of one schema: each migrator is a session of its
// own. A session database/sql opens in place of a lost one is pointed at
// the migrator's current schema before it is used; one opened with no
// schema to point at fails, and no session ever starts with a search
// path. A migrator whose run failed is closed, not lent again: what its
// session holds is unknown.
//
// At most keep migrators are kept idle, and each for at most idle; Close
// closes them all, and those lent out as they come back.
type Migrators struct {
	cfg  *pgx.ConnConfig
	keep int
	idle time.Duration

	mu     sync.Mutex
	free   []*migrator // idle, the most recently returned last
	busy   int
	timer  *time.Timer // closes migrators idle too long; nil when none is idle
	closed bool

	connects, reused, discarded atomic.Int64
}

// migrator is one owner session, as database/sql handle of one connection.
type migrator struct {
	db *sql.DB
	// schema is what the session is pointed at, and what a session
	// opened in place of a lost one is pointed at.
	schema atomic.Pointer[string]
	since  time.Time // when it was last given back
}

// MigratorStats is what Migrators did so far, and holds now.
type MigratorStats struct {
	// Connects counts the sessions opened: backend starts.
	Connects int64
	// Reused counts schemas migrated on a session kept from an earlier
	// one.
	Reused int64
	// Discarded counts migrators closed after a failed run (or a failed
	// reset).
	Discarded int64
	// Idle and Busy are the migrators kept idle and those lent out now.
	Idle, Busy int
}

// ErrMigratorsClosed is returned by Migrate after Close.
var ErrMigratorsClosed = errors.New("migrators closed")

// NewMigrators returns migrators acting as the owner on cfg's database
// (cfg as the owner pool's: BecomeOwner is run on every session), keeping
// at most keep of them (at least one) idle, each for at most idle.
func NewMigrators(cfg *pgx.ConnConfig, keep int, idle time.Duration) *Migrators {
	cfg = cfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// A session not pointed at a schema has none to create in; RESET ALL
	// comes back to this too.
	cfg.RuntimeParams["search_path"] = ""
	return &Migrators{cfg: cfg, keep: max(keep, 1), idle: idle}
}

// pointAt is what makes a session the owner's, migrating schema.
func pointAt(schema string) string {
	return AsOwner + "; SET search_path = " + pgx.Identifier{schema}.Sanitize()
}

// resetTo is pointAt for a session that migrated another schema before,
// in one simple-protocol message: no setting, session advisory lock or
// temporary table of the last run survives it.
func resetTo(schema string) string {
	return "RESET ALL; SELECT pg_advisory_unlock_all(); DISCARD TEMP; " + pointAt(schema)
}

// Migrate is MigrateTenantTables on a lent migrator: it applies the tenant
// migrations to schema as the owner and returns the version reached, the
// one reached before the failing migration on error.
func (m *Migrators) Migrate(ctx context.Context, schema string) (int64, error) {
	mg, err := m.take(ctx, schema)
	if err != nil {
		return 0, fmt.Errorf("migrate %s: %w", schema, err)
	}
	ok := false
	defer func() { // a panic in goose gives the migrator back too (closed)
		if !ok {
			m.discarded.Add(1)
		}
		m.done(mg, ok)
	}()
	v, err := MigrateTenantTablesOn(ctx, mg.db, m.cfg.Database, schema)
	if err != nil {
		return v, err
	}
	ok = true
	return v, nil
}

// take lends a migrator pointed at schema: the one given back last, reset,
// or else a new one, which database/sql connects on first use.
func (m *Migrators) take(ctx context.Context, schema string) (*migrator, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrMigratorsClosed
	}
	var mg *migrator
	if n := len(m.free); n > 0 {
		mg, m.free = m.free[n-1], m.free[:n-1]
	}
	m.busy++
	m.mu.Unlock()
	if mg != nil {
		mg.schema.Store(&schema)
		_, err := mg.db.ExecContext(ctx, resetTo(schema))
		if err == nil {
			m.reused.Add(1)
			return mg, nil
		}
		// Gone, or in a state the reset does not undo: closed, and a
		// new session takes its place.
		m.discarded.Add(1)
		mg.db.Close()
		if ctx.Err() != nil {
			m.done(nil, false)
			return nil, err
		}
	}
	return m.open(schema), nil
}

// open returns a new migrator pointed at schema.
func (m *Migrators) open(schema string) *migrator {
	mg := &migrator{}
	mg.schema.Store(&schema)
	mg.db = stdlib.OpenDB(*m.cfg, stdlib.OptionAfterConnect(func(ctx context.Context, c *pgx.Conn) error {
		m.connects.Add(1)
		_, err := c.Exec(ctx, pointAt(*mg.schema.Load()))
		return err
	}))
	mg.db.SetMaxOpenConns(1)
	mg.db.SetMaxIdleConns(1)
	return mg
}

// done takes mg back: kept idle when ok and there is room, else closed.
// mg may be nil (nothing to take back but the count).
func (m *Migrators) done(mg *migrator, ok bool) {
	m.mu.Lock()
	m.busy--
	if mg == nil {
		m.mu.Unlock()
		return
	}
	if !ok || m.closed || len(m.free) >= m.keep {
		m.mu.Unlock()
		mg.db.Close()
		return
	}
	mg.since = time.Now()
	m.free = append(m.free, mg)
	if m.timer == nil {
		m.timer = time.AfterFunc(m.idle, m.sweep)
	}
	m.mu.Unlock()
}

// sweep closes the migrators idle for m.idle or longer, and comes back
// when the next of the others will have been.
func (m *Migrators) sweep() {
	m.mu.Lock()
	m.timer = nil
	if m.closed {
		m.mu.Unlock()
		return
	}
	now := time.Now()
	var old []*migrator
	keep := m.free[:0]
	for _, mg := range m.free {
		if now.Sub(mg.since) >= m.idle {
			old = append(old, mg)
		} else {
			keep = append(keep, mg)
		}
	}
	clear(m.free[len(keep):])
	m.free = keep
	if len(m.free) > 0 {
		// free is in the order given back: the first is the oldest.
		m.timer = time.AfterFunc(m.idle-now.Sub(m.free[0].since), m.sweep)
	}
	m.mu.Unlock()
	for _, mg := range old {
		mg.db.Close()
	}
}

// Stats returns what m did so far, and holds now.
func (m *Migrators) Stats() MigratorStats {
	m.mu.Lock()
	idle, busy := len(m.free), m.busy
	m.mu.Unlock()
	return MigratorStats{
		Connects: m.connects.Load(), Reused: m.reused.Load(), Discarded: m.discarded.Load(),
		Idle: idle, Busy: busy,
	}
}

// Close closes the idle migrators, and those lent out as they come back;
// Migrate then returns ErrMigratorsClosed. It is idempotent.
func (m *Migrators) Close() {
	m.mu.Lock()
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	free := m.free
	m.free = nil
	m.mu.Unlock()
	for _, mg := range free {
		mg.db.Close()
	}
}
