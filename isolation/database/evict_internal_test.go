package database

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// The eviction order: pools a Run is about to use last; spare
// connections (a pool's surplus, a quiet pool's) first; then the fewest
// recent uses per open connection; then least recently used.
func TestCompareVictims(t *testing.T) {
	t.Parallel()
	steady := victim{worth: 14, order: 1}                // a request a second, but the LRU's oldest
	once := victim{worth: 1, order: 3}                   // seen once, just now
	onceBefore := victim{worth: 1, order: 2}             // seen once, a little earlier
	surplus := victim{worth: 0.5, order: 4, spare: true} // a busy tenant's fourth connection
	busy := victim{worth: 20, order: 5, spare: true}     // a busier tenant's second
	wanted := victim{worth: 0.1, order: 0, wanted: true}
	got := []victim{wanted, steady, once, busy, surplus, onceBefore}
	slices.SortFunc(got, compareVictims)
	want := []victim{surplus, busy, onceBefore, once, steady, wanted}
	if !slices.Equal(got, want) {
		t.Fatalf("eviction order %+v, want %+v", got, want)
	}
}

// A pool's count of uses halves every useHalfLife and grows by one a use:
// a tenant with a request a second settles near useHalfLife/ln 2, one seen
// once never counts more than 1.
func TestUsesDecay(t *testing.T) {
	t.Parallel()
	var p tenantPool
	now := time.Now()
	p.used(now)
	if got := p.usesAsOf(now.Add(useHalfLife)); math.Abs(got-0.5) > 1e-9 {
		t.Errorf("one use, a half-life later: %v, want 0.5", got)
	}
	var steady tenantPool
	for i := range 300 {
		steady.used(now.Add(time.Duration(i) * time.Second))
	}
	settled := useHalfLife.Seconds() / math.Ln2
	if got := steady.usesAsOf(now.Add(299 * time.Second)); math.Abs(got-settled) > 1 {
		t.Errorf("a use a second for 5 minutes: %v, want about %v", got, settled)
	}
	if got := (&tenantPool{}).usesAsOf(now); got != 0 {
		t.Errorf("never used: %v, want 0", got)
	}
}

// Over its bound of pools, the cache closes unused pools without a
// connection before one with a connection, even when that one is the
// least recently used: its connection goes only by evictIdle's choice.
func TestPoolsWithoutConnectionsCloseFirst(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	b := newBudget(10)
	c := newCache(b, time.Hour, 2, func(key poolKey, p *tenantPool) (*pgxpool.Config, error) {
		cfg, err := pgxpool.ParseConfig(db.AppURL)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.DialFunc = b.dialer(p, cfg.ConnConfig.DialFunc)
		return cfg, nil
	})
	t.Cleanup(c.close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	warm, err := c.get(poolKey{"s", "warm"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := warm.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn.Release()
	c.put(warm)
	for _, db := range []string{"a", "b", "c"} { // each over the bound of 2
		p, err := c.get(poolKey{"s", db})
		if err != nil {
			t.Fatal(err)
		}
		c.put(p)
	}
	if !c.has(poolKey{"s", "warm"}) {
		t.Fatal("the pool with a connection closed while pools without one stayed")
	}
	if c.has(poolKey{"s", "a"}) || c.has(poolKey{"s", "b"}) || !c.has(poolKey{"s", "c"}) {
		t.Errorf("want the pools of a and b closed, c's open: a %v, b %v, c %v", c.has(poolKey{"s", "a"}), c.has(poolKey{"s", "b"}), c.has(poolKey{"s", "c"}))
	}
	if n := c.len(); n != 2 {
		t.Errorf("%d pools open, want the bound, 2", n)
	}
}

// For a tenant that has a connection and wants another (surplus), no
// tenant in use loses its only connection, however little used, nor a
// busier tenant its second; a tenant's surplus worth less than the new
// connection would be, or the only connection of a tenant unused for
// quietAfter, may go. A tenant with no connection still evicts any idle
// one.
func TestSurplusEvictsOnlyWhatIsWorthLess(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	// pool opens a pool with conns idle connections and uses recent uses.
	pool := func(name string, conns int, uses float64, lastUsed time.Time) *tenantPool {
		t.Helper()
		p := &tenantPool{key: poolKey{"s", name}, pool: pgtest.Pool(t, db.AppURL), uses: uses, usesAt: now, lastUsed: lastUsed}
		var held []*pgxpool.Conn
		for range conns {
			c, err := p.pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Release()
		}
		return p
	}
	idle := func(p *tenantPool) int32 { return p.pool.Stat().IdleConns() }
	// inUse is the last use of the tenants in use: ahead of the clock, so
	// that none turns quiet (quietAfter) while a busy machine runs the test.
	inUse := now.Add(time.Hour)
	cacheOf := func(pools ...*tenantPool) *cache {
		c := &cache{pools: map[poolKey]*tenantPool{}}
		for _, p := range pools {
			p.elem = c.lru.PushFront(p)
			c.pools[p.key] = p
		}
		return c
	}

	// The taker: 1 connection, 10 recent uses; another would be worth 5.
	taker := pool("taker", 1, 10, inUse)
	warm := pool("warm", 1, 6, inUse) // its only connection, worth 6
	c := cacheOf(taker, warm)
	if c.evictIdle(taker, false, true) || idle(warm) != 1 {
		t.Fatalf("a surplus taker closed a warm tenant's only connection (worth 6 > 5): %d idle left", idle(warm))
	}
	light := pool("light", 1, 1, inUse) // its only connection, worth 1 < 5
	c = cacheOf(taker, light)
	if c.evictIdle(taker, false, true) || idle(light) != 1 {
		t.Fatalf("a surplus taker closed the only connection of a tenant in use: %d idle left", idle(light))
	}
	busier := pool("busier", 2, 12, inUse) // its second connection, worth 6
	c = cacheOf(taker, busier)
	if c.evictIdle(taker, false, true) || idle(busier) != 2 {
		t.Fatalf("a surplus taker closed a busier tenant's second connection: %d idle left", idle(busier))
	}
	spare := pool("spare", 3, 6, inUse) // its third connection, worth 2
	c = cacheOf(taker, warm, spare)
	if !c.evictIdle(taker, false, true) {
		t.Fatal("a surplus taker found no victim with a tenant's surplus worth less than its own")
	}
	if n := spare.pool.Stat().TotalConns(); n != 2 {
		t.Errorf("the tenant with a surplus has %d connections, want 2: one taken out to close", n)
	}
	if idle(warm) != 1 {
		t.Errorf("the warm tenant lost its only connection rather than the spare surplus")
	}
	quiet := pool("quiet", 1, 100, now.Add(-2*quietAfter)) // many uses, but none lately
	c = cacheOf(taker, quiet)
	if !c.evictIdle(taker, false, true) {
		t.Fatal("a surplus taker could not close the only connection of a quiet tenant")
	}
	// The reserve (ahead) closes spare connections only, whatever their
	// worth: a quiet tenant's, not a warm or light tenant's only one.
	c = cacheOf(taker, warm, light)
	if c.evictIdle(nil, true, false) || idle(warm) != 1 || idle(light) != 1 {
		t.Fatalf("the reserve closed the only connection of a tenant in use: warm %d, light %d idle", idle(warm), idle(light))
	}
	quiet2 := pool("quiet2", 1, 100, now.Add(-2*quietAfter))
	c = cacheOf(warm, light, quiet2)
	if !c.evictIdle(nil, true, false) || idle(quiet2) != 0 {
		t.Fatal("the reserve did not close the only connection of a quiet tenant")
	}
	// A taker with no connection evicts even the warm tenant's.
	cold := &tenantPool{key: poolKey{"s", "cold"}, pool: pgtest.Pool(t, db.AppURL), uses: 1, usesAt: now}
	c = cacheOf(cold, warm)
	if !c.evictIdle(cold, false, false) {
		t.Fatal("a cold taker found no victim with a warm tenant's idle connection")
	}
}
