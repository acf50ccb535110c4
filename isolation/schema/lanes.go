package schema

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A schema tenant's reads are prepared once per tenant and connection
// (isolation.RunOnScoped), and a connection keeps the 1,024 it used last.
// pgxpool hands out whichever connection was released last, so every
// connection meets every tenant: past 1,024 ÷ (the statements a tenant
// reads with) tenants, a connection prepares nearly every read again, and
// every backend builds relation and catalog cache entries for every
// tenant's tables.
//
// lanes keeps a tenant's transactions on a few connections. Each tenant
// hashes to one of n lanes, and each lane has its share of the serving
// pool's connections (connsPerLane), borrowed from the pool as the lane
// needs them: a connection serves only its lane's tenants, about T ÷ n of
// them. A transaction whose lane's connections are all busy waits for one
// of them for at most spill, then takes a connection idle in another lane
// (it goes back to its own lane afterwards) or one more from the pool, or
// else the next one any lane releases: a busy tenant waits at most spill
// for its own lane, then competes for every connection, never confined to
// its lane's share. The pool decides nothing about
// safety: every transaction binds its tenant afresh (role, search_path and
// setting, all transaction-local), whichever connection it runs on.
//
// Bounds:
//   - lanes borrow at most max of the pool's connections; the rest (an
//     eighth, at least one) stays with the pool for the process's other
//     work (the tenant directory, API keys, shared-table tenants);
//   - a connection idle in a lane for linger goes back to the pool, and one
//     borrowed for longer than lifetime goes back at its next release, so
//     the pool's own waiters, health checks and lifetime limits see it
//     (linger is under the second of idleness after which pgxpool pings a
//     connection before handing it out: a lane never hands out one idle
//     for longer);
//   - a lane holds more than its share only while its transactions are
//     waiting; its extra connections go back to the pool as they come free;
//   - a wait ends with its context.
type lanes struct {
	pool     *pgxpool.Pool
	seed     maphash.Seed
	n        int // lanes
	share    int // connections a lane keeps
	max      int // connections borrowed at most, n × share
	spill    time.Duration
	linger   time.Duration
	lifetime time.Duration

	mu      sync.Mutex
	lane    []laneState
	anyone  []*waiter // waiting past spill for any connection, oldest first
	held    int       // borrowed from the pool: idle here or in use
	reaping bool      // a reap is scheduled
	closed  bool
	count   laneCounts
}

type laneState struct {
	idle    []*lent   // most recently released last
	waiters []*waiter // oldest first
	conns   int       // connections whose home is the lane, idle or in use
}

// laneCounts counts how transactions found their connections.
type laneCounts struct {
	// Own: a connection of the tenant's lane, idle or released to it;
	// Borrowed: a new one from the pool; Visited: one idle in another
	// lane, after spill; Spilled: the next one any lane released, after
	// spill.
	Own, Borrowed, Visited, Spilled int64
}

// lent is a connection borrowed from the pool.
type lent struct {
	conn     *pgxpool.Conn
	home     int
	borrowed time.Time
	idleAt   time.Time
}

type waiter struct {
	lane int
	ch   chan grant // buffered: a grant never blocks the granter
}

// grant answers a waiter: a connection, or leave to borrow one from the
// pool for its lane (held and the lane's conns already count it), or an
// error.
type grant struct {
	l   *lent
	err error
}

// errLanesClosed is what a transaction waiting for a connection gets when
// the strategy closes.
var errLanesClosed = errors.New("schema: strategy closed")

const (
	// connsPerLane is how many connections a lane keeps: enough that a
	// lane's transactions seldom wait on one another, few enough that a
	// connection meets few tenants.
	connsPerLane = 2
	laneSpill    = time.Millisecond
	laneLinger   = 500 * time.Millisecond
	laneLifetime = time.Minute
)

// newLanes returns lanes over pool, or nil when pool is too small to give
// lanes connections and keep some for everything else, or when its
// connections do not keep prepared statements (behind PgBouncer a client
// connection is no particular server connection).
func newLanes(pool *pgxpool.Pool) *lanes {
	cfg := pool.Config()
	if cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeCacheStatement {
		return nil
	}
	size := int(cfg.MaxConns)
	n := (size - max(1, size/8)) / connsPerLane
	if n < 2 {
		return nil
	}
	return &lanes{
		pool:     pool,
		seed:     maphash.MakeSeed(),
		n:        n,
		share:    connsPerLane,
		max:      n * connsPerLane,
		spill:    laneSpill,
		linger:   laneLinger,
		lifetime: laneLifetime,
		lane:     make([]laneState, n),
	}
}

// laneOf returns the lane of tenant id.
func (l *lanes) laneOf(id uuid.UUID) int {
	return int(maphash.Bytes(l.seed, id[:]) % uint64(l.n))
}

// acquire returns a connection for a transaction of lane k.
func (l *lanes) acquire(ctx context.Context, k int) (*lent, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errLanesClosed
	}
	ln := &l.lane[k]
	if c := ln.pop(); c != nil {
		l.count.Own++
		l.mu.Unlock()
		return c, nil
	}
	if ln.conns < l.share && l.held < l.max {
		ln.conns++
		l.held++
		l.count.Borrowed++
		l.mu.Unlock()
		return l.borrow(ctx, k)
	}
	w := &waiter{lane: k, ch: make(chan grant, 1)}
	ln.waiters = append(ln.waiters, w)
	spill := l.spill
	l.mu.Unlock()

	timer := time.NewTimer(spill)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return l.take(ctx, k, g)
	case <-ctx.Done():
		return nil, l.abandon(ctx, w)
	case <-timer.C:
	}

	// Past spill: a connection idle in another lane, one more from the
	// pool, or the next one released anywhere.
	l.mu.Lock()
	if !remove(&ln.waiters, w) {
		l.mu.Unlock()
		return l.take(ctx, k, <-w.ch) // granted meanwhile
	}
	if c := l.visit(); c != nil {
		l.count.Visited++
		l.mu.Unlock()
		return c, nil
	}
	if l.held < l.max {
		ln.conns++
		l.held++
		l.count.Borrowed++
		l.mu.Unlock()
		return l.borrow(ctx, k)
	}
	l.anyone = append(l.anyone, w)
	l.count.Spilled++
	l.mu.Unlock()
	select {
	case g := <-w.ch:
		return l.take(ctx, k, g)
	case <-ctx.Done():
		return nil, l.abandon(ctx, w)
	}
}

// abandon takes w out of its queue as its context ends, or passes on what
// it was granted meanwhile; it returns the context's error.
func (l *lanes) abandon(ctx context.Context, w *waiter) error {
	l.mu.Lock()
	if remove(&l.lane[w.lane].waiters, w) || remove(&l.anyone, w) {
		l.mu.Unlock()
		return ctx.Err()
	}
	l.mu.Unlock()
	switch g := <-w.ch; {
	case g.l != nil:
		l.release(g.l)
	case g.err == nil:
		l.returned(w.lane)
	}
	return ctx.Err()
}

// take turns a waiter's grant into a connection.
func (l *lanes) take(ctx context.Context, k int, g grant) (*lent, error) {
	switch {
	case g.err != nil:
		return nil, g.err
	case g.l != nil:
		l.mu.Lock()
		l.count.Own += int64(btoi(g.l.home == k))
		l.mu.Unlock()
		return g.l, nil
	}
	return l.borrow(ctx, k)
}

// borrow acquires a connection for lane k from the pool, held and the
// lane's conns already counting it.
//
// A connection remembers the lane it last served (in its pgx.Conn's
// CustomData), and the pool hands out whichever it released last: one that
// comes back remembering another lane with room goes back to that lane,
// whose tenants it holds warm, and borrow takes the next, at most n times
// and only while the pool has connections to spare.
func (l *lanes) borrow(ctx context.Context, k int) (*lent, error) {
	for tries := 0; ; tries++ {
		c, err := l.pool.Acquire(ctx)
		if err != nil {
			l.returned(k)
			return nil, err
		}
		now := time.Now()
		j, ok := c.Conn().PgConn().CustomData()[laneKey].(laneMark)
		if !ok || j.lanes != l || j.lane == k || tries >= l.n {
			c.Conn().PgConn().CustomData()[laneKey] = laneMark{l, k}
			return &lent{conn: c, home: k, borrowed: now}, nil
		}
		home := &lent{conn: c, home: j.lane, borrowed: now}
		l.mu.Lock()
		ln := &l.lane[j.lane]
		if l.closed || ln.conns >= l.share || l.held >= l.max || !l.spare() {
			l.mu.Unlock()
			c.Conn().PgConn().CustomData()[laneKey] = laneMark{l, k}
			home.home = k
			return home, nil
		}
		ln.conns++
		l.held++
		l.mu.Unlock()
		l.release(home)
	}
}

// laneKey is the CustomData key of the lane a connection last served.
const laneKey = "isolation.schema.lane"

// laneMark is the lane a connection last served, of which lanes.
type laneMark struct {
	lanes *lanes
	lane  int
}

// release gives c back: to the oldest transaction waiting past spill, else
// to its lane's oldest waiting transaction, else idle in the
// lane (or back to the pool when the lane holds more than its share). A
// connection that is broken, left in a transaction or borrowed for longer
// than lifetime goes back to the pool (which destroys it when it is not
// fit to serve).
func (l *lanes) release(c *lent) {
	pc := c.conn.Conn().PgConn()
	if pc.IsClosed() || pc.IsBusy() || pc.TxStatus() != 'I' || time.Since(c.borrowed) > l.lifetime {
		c.conn.Release()
		l.returned(c.home)
		return
	}
	l.mu.Lock()
	ln := &l.lane[c.home]
	var w *waiter
	switch {
	case l.closed:
	case len(l.anyone) > 0:
		w, l.anyone = l.anyone[0], l.anyone[1:]
	case len(ln.waiters) > 0:
		w, ln.waiters = ln.waiters[0], ln.waiters[1:]
	case ln.conns <= l.share:
		c.idleAt = time.Now()
		ln.idle = append(ln.idle, c)
		if !l.reaping {
			l.reaping = true
			time.AfterFunc(l.linger, l.reap)
		}
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if w != nil {
		w.ch <- grant{l: c}
		return
	}
	c.conn.Release()
	l.returned(c.home)
}

// returned records that a connection of lane k went back to the pool (or
// never came): the oldest transaction waiting past spill, else one
// waiting for k, may borrow one in its place.
func (l *lanes) returned(k int) {
	l.mu.Lock()
	l.held--
	l.lane[k].conns--
	var w *waiter
	switch ln := &l.lane[k]; {
	case l.closed:
	case len(l.anyone) > 0:
		w, l.anyone = l.anyone[0], l.anyone[1:]
	case len(ln.waiters) > 0:
		w, ln.waiters = ln.waiters[0], ln.waiters[1:]
	}
	if w != nil {
		l.held++
		l.lane[w.lane].conns++
	}
	l.mu.Unlock()
	if w != nil {
		w.ch <- grant{}
	}
}

// pop takes the connection the lane released last, or nil.
func (ln *laneState) pop() *lent {
	if len(ln.idle) == 0 {
		return nil
	}
	c := ln.idle[len(ln.idle)-1]
	ln.idle[len(ln.idle)-1] = nil
	ln.idle = ln.idle[:len(ln.idle)-1]
	return c
}

// visit takes an idle connection of the lane holding the most, or nil: it
// goes back to its own lane when released. Called with mu held.
func (l *lanes) visit() *lent {
	from := -1
	for i := range l.lane {
		if len(l.lane[i].idle) > 0 && (from < 0 || len(l.lane[i].idle) > len(l.lane[from].idle)) {
			from = i
		}
	}
	if from < 0 {
		return nil
	}
	return l.lane[from].pop()
}

// reap gives the pool back every connection idle in a lane for linger
// (every idle one once closed), and schedules itself again while any
// stays idle.
func (l *lanes) reap() {
	now := time.Now()
	var back []*lent
	l.mu.Lock()
	var soonest time.Time
	for i := range l.lane {
		ln := &l.lane[i]
		keep := ln.idle[:0]
		for _, c := range ln.idle {
			if l.closed || now.Sub(c.idleAt) >= l.linger {
				back = append(back, c)
				ln.conns--
				continue
			}
			keep = append(keep, c)
			if soonest.IsZero() || c.idleAt.Before(soonest) {
				soonest = c.idleAt
			}
		}
		clear(ln.idle[len(keep):])
		ln.idle = keep
	}
	l.held -= len(back)
	l.reaping = !soonest.IsZero()
	if l.reaping {
		time.AfterFunc(soonest.Add(l.linger).Sub(now), l.reap)
	}
	l.mu.Unlock()
	for _, c := range back {
		c.conn.Release()
	}
}

// close gives the pool back every idle connection and fails every waiting
// transaction; connections in use go back to the pool as they are
// released.
func (l *lanes) close() {
	l.mu.Lock()
	l.closed = true
	waiters := l.anyone
	l.anyone = nil
	for i := range l.lane {
		waiters = append(waiters, l.lane[i].waiters...)
		l.lane[i].waiters = nil
	}
	l.mu.Unlock()
	for _, w := range waiters {
		w.ch <- grant{err: errLanesClosed}
	}
	l.reap()
}

// counts returns how transactions found their connections so far.
func (l *lanes) counts() laneCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// stats reports the connections the lanes hold, those idle among them and
// the transactions waiting.
func (l *lanes) stats() (held, idle, waiting int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.lane {
		idle += len(l.lane[i].idle)
		waiting += len(l.lane[i].waiters)
	}
	return l.held, idle, waiting + len(l.anyone)
}

// remove takes w out of ws, reporting whether it was there.
func remove(ws *[]*waiter, w *waiter) bool {
	for i, x := range *ws {
		if x == w {
			*ws = append((*ws)[:i], (*ws)[i+1:]...)
			return true
		}
	}
	return false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// spare reports whether the pool has an idle connection, or room for
// another, so that borrowing one would not wait.
func (l *lanes) spare() bool {
	st := l.pool.Stat()
	return st.IdleConns() > 0 || st.TotalConns() < st.MaxConns()
}
