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

// The eviction order: pools a Run is about to use last; then the fewest
// recent uses per open connection; then least recently used.
func TestCompareVictims(t *testing.T) {
	t.Parallel()
	steady := victim{worth: 14, order: 1}    // a request a second, but the LRU's oldest
	once := victim{worth: 1, order: 3}       // seen once, just now
	onceBefore := victim{worth: 1, order: 2} // seen once, a little earlier
	surplus := victim{worth: 0.5, order: 4}  // a busy tenant's fourth connection
	wanted := victim{worth: 0.1, order: 0, wanted: true}
	got := []victim{wanted, steady, once, surplus, onceBefore}
	slices.SortFunc(got, compareVictims)
	want := []victim{surplus, onceBefore, once, steady, wanted}
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
