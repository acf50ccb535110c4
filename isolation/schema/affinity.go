package schema

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tenant-affine connections. Every tenant has its own tables, so a serving
// backend keeps relation-cache and catalog-cache entries per tenant it has
// served, and PostgreSQL analyses and plans a cached statement again when
// the search_path or role differs from the ones it was planned under.
// Handed the pool's most recently released connection, nearly every
// request of a thousand tenants meets a backend whose last transaction was
// another tenant's, and often one that never served this tenant at all.
//
// So Run picks, among the serving pool's idle connections, the one where
// t is warmest: the one whose last transaction was t's, else one that
// served t recently, else one of t's home connections (a hash of the
// tenant's id, so that a tenant's first requests go to the same few
// backends), else any idle one. Only when none is idle does it wait, as
// pgxpool.Acquire does, for whichever is released first: a tenant whose
// home connections are busy is served elsewhere, never queued behind
// them. It takes connections of the one serving pool only: the number of
// connections, and the admission Gate's account of them, are unchanged.
// The binding stays per transaction (SET LOCAL): affinity changes where a
// transaction runs, never what it may see.

// Keys of what a connection's CustomData records for affinity.
const (
	lastKey   = "schema.affinity.last"   // uuid.UUID: the tenant of the last transaction of Run
	recentKey = "schema.affinity.recent" // *recentTenants
	homeKey   = "schema.affinity.home"   // int: the connection's home index
	usedKey   = "schema.affinity.used"   // time.Time: when Run last released it
)

// recentSize bounds the tenants one connection remembers having served:
// memory is bounded whatever the number of tenants.
const recentSize = 256

// pingAfter is how long a connection may have been idle before it is
// pinged when picked, as pgxpool.Acquire does for the connections it
// hands out.
const pingAfter = time.Second

// recentTenants is a bounded set of the tenants a connection served, the
// oldest forgotten first.
type recentTenants struct {
	ring [recentSize]uuid.UUID
	next int
	set  map[uuid.UUID]struct{}
}

func (r *recentTenants) has(id uuid.UUID) bool {
	_, ok := r.set[id]
	return ok
}

func (r *recentTenants) add(id uuid.UUID) {
	if r.has(id) {
		return
	}
	if r.set == nil {
		r.set = make(map[uuid.UUID]struct{}, recentSize)
	}
	if old := r.ring[r.next]; old != uuid.Nil {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentSize
	r.set[id] = struct{}{}
}

// affinity picks tenant-affine connections of one pool.
type affinity struct {
	pool *pgxpool.Pool
	// homes is how many home indices connections are spread over (the
	// pool's size); a tenant's home is its id's hash modulo homes.
	homes int
	// seq numbers the connections as affinity first sees them.
	seq atomic.Uint64
}

func newAffinity(pool *pgxpool.Pool) *affinity {
	return &affinity{pool: pool, homes: max(int(pool.Config().MaxConns), 1)}
}

// home returns id's home index.
func (a *affinity) home(id uuid.UUID) int {
	return int(binary.BigEndian.Uint64(id[8:]) % uint64(a.homes))
}

// score rates how warm c is for the tenant id of home index home.
func (a *affinity) score(c *pgx.Conn, id uuid.UUID, home int) int {
	data := c.PgConn().CustomData()
	s := 0
	if last, _ := data[lastKey].(uuid.UUID); last == id {
		s += 4
	}
	if r, _ := data[recentKey].(*recentTenants); r != nil && r.has(id) {
		s += 2
	}
	h, ok := data[homeKey].(int)
	if !ok {
		h = int(a.seq.Add(1) % uint64(a.homes))
		data[homeKey] = h
	}
	if h == home {
		s++
	}
	return s
}

// acquire returns the idle connection of the pool warmest for id, or,
// with none idle, the first one released.
func (a *affinity) acquire(ctx context.Context, id uuid.UUID) (*pgxpool.Conn, error) {
	idle := a.pool.AcquireAllIdle(ctx)
	home := a.home(id)
	best, bestScore := -1, -1
	for i, c := range idle {
		if s := a.score(c.Conn(), id, home); s > bestScore {
			best, bestScore = i, s
		}
	}
	var picked *pgxpool.Conn
	idleTimeout, minConns := a.pool.Config().MaxConnIdleTime, a.pool.Config().MinConns
	now := time.Now()
	for i, c := range idle {
		if i == best {
			picked = c
			continue
		}
		// Taking every idle connection and giving back the others tells
		// the pool they were just used, so the pool's own idle timeout
		// would never end them: end here those that Run last released
		// longer ago than it.
		if used, ok := c.Conn().PgConn().CustomData()[usedKey].(time.Time); ok && idleTimeout > 0 &&
			now.Sub(used) > idleTimeout && a.pool.Stat().TotalConns() > minConns {
			_ = c.Conn().Close(ctx)
		}
		c.Release()
	}
	if picked != nil {
		used, ok := picked.Conn().PgConn().CustomData()[usedKey].(time.Time)
		if !ok || now.Sub(used) <= pingAfter {
			return picked, nil
		}
		if err := picked.Ping(ctx); err == nil {
			return picked, nil
		}
		// Broken while idle: give it back closed (the pool destroys it)
		// and wait for another, as pgxpool.Acquire would.
		_ = picked.Conn().Close(ctx)
		picked.Release()
	}
	return a.pool.Acquire(ctx)
}

// release records that c served id, and gives it back to the pool.
func (a *affinity) release(c *pgxpool.Conn, id uuid.UUID) {
	data := c.Conn().PgConn().CustomData()
	data[lastKey] = id
	r, _ := data[recentKey].(*recentTenants)
	if r == nil {
		r = &recentTenants{}
		data[recentKey] = r
	}
	r.add(id)
	data[usedKey] = time.Now()
	c.Release()
}

// SetAffinity sets whether Run picks tenant-affine connections (see
// Config.Affinity); call it before the first Run. Behind a
// transaction-mode pooler (a serving pool that does not cache statements)
// it is off whatever on says: the pooler, not the pool, picks the
// backend.
func (s *Strategy) SetAffinity(on bool) {
	s.affinity = nil
	if on && s.app != nil && s.app.Config().ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		s.affinity = newAffinity(s.app)
	}
}
