package database

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var errClosed = errors.New("database strategy closed")

// poolKey names a tenant database: its server and its name.
type poolKey struct{ server, db string }

// tenantPool is the pool of one tenant database. Its connections are dialled
// through the budget, so each holds a slot of it while open.
type tenantPool struct {
	key  poolKey
	pool *pgxpool.Pool
	// released is notified when a connection of pool is back idle.
	released signal

	// Guarded by cache.mu.
	refs     int // Runs using the pool: it is not closed while they do
	lastUsed time.Time
	elem     *list.Element // place in cache.lru; nil once removed
	uses     float64       // Runs begun, decayed with useHalfLife, as of usesAt
	usesAt   time.Time
}

// useHalfLife is how fast a pool's count of uses fades: a use counts half
// as much this long after. It is the memory of the eviction policy
// (evictIdle): long enough that a tenant with a request every few seconds
// keeps a count well above a tenant seen once, short enough that a
// tenant that went quiet yields its connections within a minute or so.
const useHalfLife = 10 * time.Second

// used counts a use of p at now. Guarded by cache.mu.
func (p *tenantPool) used(now time.Time) {
	p.uses = p.usesAsOf(now) + 1
	p.usesAt = now
}

// usesAsOf is p's decayed count of uses at now. Guarded by cache.mu.
func (p *tenantPool) usesAsOf(now time.Time) float64 {
	if p.uses == 0 {
		return 0
	}
	age := now.Sub(p.usesAt)
	if age <= 0 {
		return p.uses
	}
	return p.uses * math.Exp2(-float64(age)/float64(useHalfLife))
}

// established returns how many connections p has open, idle or in use,
// besides those being dialled; 0 for no pool (a connection dialled through
// the budget for no tenant pool, as verify's are).
func (p *tenantPool) established() int32 {
	if p == nil {
		return 0
	}
	st := p.pool.Stat()
	return st.TotalConns() - st.ConstructingConns()
}

// quietAfter is how long a pool goes unused before its only connection is
// spare (compareVictims): a tenant with a request a second or more keeps
// it, one quiet for longer gives it up to a busy tenant that wants
// another, or to the budget's reserve.
const quietAfter = time.Second

// cache holds the tenant pools, most recently used first: created on first
// use, closed when unused for idle, when more than max are open (the least
// recently used unused ones), when their tenant is deprovisioned, and at
// Close. It is safe for concurrent use.
type cache struct {
	budget *budget
	idle   time.Duration
	max    int
	// config returns the pool configuration of db on server.
	config func(key poolKey, p *tenantPool) (*pgxpool.Config, error)

	mu          sync.Mutex
	pools       map[poolKey]*tenantPool
	lru         list.List // of *tenantPool, most recently used at the front
	closed      bool
	stopJanitor chan struct{} // nil until the first pool opens
	wg          sync.WaitGroup
}

func newCache(b *budget, idle time.Duration, max int, config func(poolKey, *tenantPool) (*pgxpool.Config, error)) *cache {
	c := &cache{budget: b, idle: idle, max: max, config: config, pools: map[poolKey]*tenantPool{}}
	b.evict = c.evictIdle
	return c
}

// get returns the pool of key, opening it if needed, and holds it open
// until put.
func (c *cache) get(key poolKey) (*tenantPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	now := time.Now()
	if p := c.pools[key]; p != nil {
		p.refs++
		p.used(now)
		c.lru.MoveToFront(p.elem)
		return p, nil
	}
	p := &tenantPool{key: key, refs: 1}
	p.used(now)
	cfg, err := c.config(key, p)
	if err != nil {
		return nil, err
	}
	// Opening a pool contacts no server: it connects on first Acquire.
	if p.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		return nil, err
	}
	p.elem = c.lru.PushFront(p)
	c.pools[key] = p
	// Over max, unused pools close, least recently used first: those
	// without a connection before any with one. Closing a pool closes its
	// connections, and which connections go is evictIdle's choice, by
	// use; max is a few times the budget, so pools without a connection
	// are nearly always enough.
	for _, withConns := range []bool{false, true} {
		for e := c.lru.Back(); len(c.pools) > c.max && e != nil; {
			prev := e.Prev()
			if q := e.Value.(*tenantPool); q.refs == 0 && (withConns || q.pool.Stat().TotalConns() == 0) {
				c.removeLocked(q)
				c.closeLocked(q)
			}
			e = prev
		}
	}
	if c.stopJanitor == nil {
		c.stopJanitor = make(chan struct{})
		c.wg.Add(1)
		go c.janitor(c.stopJanitor)
	}
	return p, nil
}

// put ends a use of p that get began.
func (c *cache) put(p *tenantPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p.refs--
	p.lastUsed = time.Now()
	if p.elem == nil && p.refs == 0 { // removed while in use
		c.closeLocked(p)
	}
}

// remove closes the pool of key, if open, and waits until its connections
// are closed — unless a Run still uses it: then the last one closes it.
func (c *cache) remove(key poolKey) {
	c.mu.Lock()
	p := c.pools[key]
	if p == nil {
		c.mu.Unlock()
		return
	}
	c.removeLocked(p)
	inUse := p.refs > 0
	c.mu.Unlock()
	if !inUse {
		p.pool.Close()
	}
}

// has reports whether a pool of key is open.
func (c *cache) has(key poolKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pools[key] != nil
}

// len returns the number of open pools.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pools)
}

func (c *cache) removeLocked(p *tenantPool) {
	delete(c.pools, p.key)
	c.lru.Remove(p.elem)
	p.elem = nil
}

// closeLocked closes p in the background (closing waits for the server to
// end each session), or at once after Close.
func (c *cache) closeLocked(p *tenantPool) {
	c.goLocked(p.pool.Close)
}

// goLocked runs fn in a goroutine that Close waits for, or, once Close has
// begun, in a goroutine Close cannot see, which is fine for fn that ends by
// itself (closing a connection or a pool does).
func (c *cache) goLocked(fn func()) {
	if c.closed {
		go fn()
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// goClose closes conn, taken out of its pool, in the background: its slot
// goes back to the budget once the server has closed it.
func (c *cache) goClose(conn *pgx.Conn) {
	if sc, ok := conn.PgConn().Conn().(*slotConn); ok {
		sc.closing()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goLocked(func() { _ = conn.Close(context.Background()) })
}

// victim is a pool with an idle connection, as evictIdle weighs it.
type victim struct {
	p *tenantPool
	// wanted: a Run holds the pool but no connection of it yet, so an
	// idle connection of it is about to be taken.
	wanted bool
	// spare: closing the connection leaves its pool another, or the pool
	// has been unused for quietAfter. Closing the only connection of a
	// pool in use makes its tenant dial on its next request, evicting
	// another in turn.
	spare bool
	// worth is the pool's decayed count of uses per open connection.
	worth float64
	// order is the pool's place in the LRU, least recently used first.
	order int
}

// compareVictims orders victims best to close first: pools no Run is
// about to use before those one is; then spare connections (a pool's
// surplus, or a quiet pool's) before a pool's only one; then least worth
// (fewest recent uses for each open connection); then least recently
// used.
//
// Why spare first: a tenant in use that loses its only connection dials
// on its next request and evicts another, which dials in turn; with the
// active tenants within the budget one cold tenant would start such a
// chain that never ends, while closing a busy tenant's surplus costs it
// some queueing at most.
//
// Why not least recently used alone: with more active tenants than the
// budget has connections, every cold tenant's request evicts a
// connection, and under LRU a tenant with steady traffic but a gap a
// little longer than the turnover loses its connection to a tenant seen
// once, then evicts another to come back: each trade the price of a
// backend start. Counting uses with a decay keeps the connections where
// they are used again (a tenant with a request every second keeps a count
// near useHalfLife/ln 2 ≈ 14; one seen once has at most 1), while the
// decay lets a tenant that went quiet give its connections up. Dividing
// by the pool's open connections makes a busy tenant's surplus idle
// connections, left from a burst, go before a steady tenant's only one.
// A pool a Run is about to take a connection from comes last whatever
// its count: closing that connection would make the Run dial at once.
func compareVictims(a, b victim) int {
	if a.wanted != b.wanted {
		if a.wanted {
			return 1
		}
		return -1
	}
	if a.spare != b.spare {
		if a.spare {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.worth, b.worth); c != 0 {
		return c
	}
	return cmp.Compare(a.order, b.order)
}

// evictIdle closes one idle connection, of the pool other than except that
// compareVictims orders first, and reports whether it found one. Its slot
// goes to whoever waits first for one.
//
// ahead (closing for the budget's reserve, not for a waiting taker) and
// surplus (except has a connection and wants another) close only spare
// connections, and spare the pools a Run is about to use: a tenant in use
// that lost its only connection would dial on its next request, a backend
// start for certain, against a slot free a little sooner or some queueing
// spared the busy tenant, and as a cold taker would put the budget under
// pressure again, so that the reserve would feed itself. Of another
// pool's surplus connections, surplus closes only one worth less than
// half as much there as the new one would be to except (a pool's worth is
// its decayed uses per open connection; the new one's, except's uses per
// connection once it has it), so that busy tenants whose counts move
// about each other's do not take connections back and forth.
func (c *cache) evictIdle(except *tenantPool, ahead, surplus bool) bool {
	c.mu.Lock()
	now := time.Now()
	mine := math.Inf(1) // what another connection would be worth to except
	if surplus {
		mine = except.usesAsOf(now) / float64(except.established()+1)
	}
	var cands []victim
	order := 0
	for e := c.lru.Back(); e != nil; e = e.Prev() {
		p := e.Value.(*tenantPool)
		order++
		if p == except {
			continue
		}
		st := p.pool.Stat()
		if st.IdleConns() == 0 {
			continue
		}
		wanted := p.refs > int(st.AcquiredConns()+st.ConstructingConns())
		worth := p.usesAsOf(now) / float64(max(st.TotalConns(), 1))
		quiet := p.refs == 0 && now.Sub(p.lastUsed) >= quietAfter
		spare := quiet || st.TotalConns() > 1
		if (ahead || surplus) && (wanted || !spare) {
			continue // only spare connections, none about to be taken
		}
		if surplus && !quiet && 2*worth >= mine {
			continue // a surplus worth at least half as much where it is
		}
		cands = append(cands, victim{
			p:      p,
			wanted: wanted,
			spare:  spare,
			worth:  worth,
			order:  order,
		})
	}
	c.mu.Unlock()
	slices.SortFunc(cands, compareVictims)
	for _, v := range cands {
		p := v.p
		conns := p.pool.AcquireAllIdle(context.Background())
		if len(conns) == 0 {
			continue // taken meanwhile
		}
		raw := conns[0].Hijack()
		for _, other := range conns[1:] {
			other.Release()
		}
		if len(conns) > 1 {
			p.released.notify()
		}
		c.goClose(raw)
		return true
	}
	return false
}

// janitor closes pools nobody used for c.idle, until stop closes.
func (c *cache) janitor(stop <-chan struct{}) {
	defer c.wg.Done()
	every := min(max(c.idle/4, 10*time.Millisecond), 30*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			c.mu.Lock()
			for e := c.lru.Back(); e != nil; {
				prev := e.Prev()
				if p := e.Value.(*tenantPool); p.refs == 0 && now.Sub(p.lastUsed) >= c.idle {
					c.removeLocked(p)
					c.closeLocked(p)
				}
				e = prev
			}
			c.mu.Unlock()
		}
	}
}

// close closes every pool and waits until their connections are closed;
// pools still in use close when their last Run ends. It is idempotent.
func (c *cache) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var idle []*tenantPool
	for _, p := range c.pools {
		c.removeLocked(p)
		if p.refs == 0 {
			idle = append(idle, p)
		}
	}
	if c.stopJanitor != nil {
		close(c.stopJanitor)
	}
	// Background work started so far is waited for below; what starts
	// from now on runs without being counted.
	c.closed = true
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range idle {
		wg.Go(p.pool.Close)
	}
	wg.Wait()
	c.wg.Wait()
}
