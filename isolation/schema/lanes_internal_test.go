package schema

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// newTestLanes returns lanes over a fresh serving pool of size
// connections, closed when t ends.
func newTestLanes(t *testing.T, size int) (*lanes, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	pc, err := postgres.PoolConfig(db.AppURL, config.PoolerNone, size)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l := newLanes(pool)
	if l == nil {
		t.Fatalf("no lanes over a pool of %d", size)
	}
	t.Cleanup(l.close)
	return l, pool
}

// pid returns the backend process id of c's connection.
func pid(t *testing.T, ctx context.Context, c *lent) int32 {
	t.Helper()
	var p int32
	if err := c.conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// setSpill sets l's spill.
func setSpill(l *lanes, d time.Duration) {
	l.mu.Lock()
	l.spill = d
	l.mu.Unlock()
}

// within fails t unless cond holds before the deadline.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each lane's transactions run on the connection the lane used last, and
// no two lanes share one while the pool has connections to spare: a plain
// pool hands every transaction the connection released last, so every
// connection meets every tenant.
func TestLanesKeepTheirConnections(t *testing.T) {
	t.Parallel()
	l, _ := newTestLanes(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owner := map[int32]int{}
	for round := range 5 {
		for lane := range l.n {
			c, err := l.acquire(ctx, lane)
			if err != nil {
				t.Fatal(err)
			}
			p := pid(t, ctx, c)
			l.release(c)
			if o, ok := owner[p]; ok && o != lane {
				t.Fatalf("round %d: lane %d ran on backend %d, lane %d's", round, lane, p, o)
			}
			owner[p] = lane
		}
	}
	if len(owner) != l.n {
		t.Fatalf("%d lanes ran on %d backends, want one each", l.n, len(owner))
	}
}

// The lanes borrow at most max of the pool's connections: the rest stays
// with the pool for the process's other work, and a lane transaction past
// the bound waits until its context ends, then leaves nothing behind.
func TestLanesLeaveThePoolItsShare(t *testing.T) {
	t.Parallel()
	l, pool := newTestLanes(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var held []*lent
	for i := range l.max {
		c, err := l.acquire(ctx, i%l.n)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := l.acquire(short, 0)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a lane transaction past %d connections got %v, want to wait out its deadline", l.max, err)
	}
	if h, _, w := l.stats(); h != l.max || w != 0 {
		t.Fatalf("after a wait ended: held %d waiting %d, want %d and 0", h, w, l.max)
	}
	other, err := pool.Acquire(ctx) // what the lanes left the pool
	if err != nil {
		t.Fatalf("the pool kept no connection for other work: %v", err)
	}
	other.Release()
	for _, c := range held {
		l.release(c)
	}
	within(t, 10*time.Second, "idle lane connections go back to the pool", func() bool {
		h, _, _ := l.stats()
		return h == 0 && int(pool.Stat().IdleConns()) == l.max+1
	})
}

// A transaction whose lane's connections are all busy waits for one of
// them rather than take another lane's idle connection, for at most
// spill; then it visits an idle one, which goes back to its own lane
// afterwards; with none idle and none to borrow, it takes the next one
// any lane releases, ahead of that lane's own newer waiters.
func TestLanesWaitForTheirOwnThenSpill(t *testing.T) {
	t.Parallel()
	l, _ := newTestLanes(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acquire := func(k int) *lent {
		t.Helper()
		c, err := l.acquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	got := make(chan *lent, 4)
	wait := func(k, waiting int) {
		t.Helper()
		go func() {
			c, err := l.acquire(ctx, k)
			if err != nil {
				t.Errorf("lane %d: %v", k, err)
			}
			got <- c
		}()
		within(t, 10*time.Second, fmt.Sprintf("a lane %d transaction waits", k), func() bool { _, _, w := l.stats(); return w == waiting })
	}
	receive := func(what string) *lent {
		t.Helper()
		select {
		case c := <-got:
			if c == nil {
				t.Fatalf("%s: no connection", what)
			}
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting", what)
		}
		return nil
	}

	var zero []*lent
	for range l.share {
		zero = append(zero, acquire(0))
	}
	one := acquire(1)
	onePID := pid(t, ctx, one)
	l.release(one) // idle in lane 1

	setSpill(l, time.Hour)
	wait(0, 1)
	if _, idle, _ := l.stats(); idle != 1 {
		t.Fatalf("a waiting lane 0 transaction took lane 1's idle connection")
	}
	zeroPID := pid(t, ctx, zero[0])
	l.release(zero[0])
	zero[0] = receive("the lane 0 waiter, after lane 0 released")
	if p := pid(t, ctx, zero[0]); p != zeroPID {
		t.Fatalf("the lane 0 waiter got backend %d, want lane 0's %d", p, zeroPID)
	}

	setSpill(l, 0)
	c := acquire(0)
	if p := pid(t, ctx, c); p != onePID {
		t.Fatalf("past spill a lane 0 transaction got backend %d, want lane 1's idle %d", p, onePID)
	}
	l.release(c)
	c = acquire(1)
	if p := pid(t, ctx, c); p != onePID {
		t.Fatalf("lane 1 got backend %d, want its own %d back from the visit", p, onePID)
	}

	held := append(zero, c)
	for len(held) < l.max {
		held = append(held, acquire(1+len(held)%(l.n-1)))
	}
	wait(0, 1) // past spill at once, nothing idle, nothing to borrow
	within(t, 10*time.Second, "the lane 0 transaction waits past spill", func() bool { return l.counts().Spilled == 1 })
	setSpill(l, time.Hour)
	wait(1, 2) // lane 1's own, newer
	released := held[len(held)-1]
	if released.home != 1 {
		for i, h := range held {
			if h.home == 1 {
				held[i], held[len(held)-1] = held[len(held)-1], h
				released = h
				break
			}
		}
	}
	held = held[:len(held)-1]
	l.release(released)
	first := receive("the transaction waiting past spill")
	if first != released {
		t.Fatal("a connection of lane 1 went to something else than the transaction waiting past spill")
	}
	l.release(first) // to lane 1's own waiter now
	held = append(held, receive("lane 1's waiter"))
	for _, c := range held {
		l.release(c)
	}
}

// A connection that comes back in a transaction, or after lifetime, goes
// back to the pool rather than to the next tenant transaction; close
// gives back the idle ones and fails the waiting.
func TestLanesReturnWhatTheyShouldNotKeep(t *testing.T) {
	t.Parallel()
	l, pool := newTestLanes(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := l.acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := pid(t, ctx, c)
	if _, err := c.conn.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	l.release(c)
	if h, idle, _ := l.stats(); h != 0 || idle != 0 {
		t.Fatalf("a connection left in a transaction: lanes hold %d (%d idle), want none", h, idle)
	}
	c, err = l.acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p := pid(t, ctx, c); p == before {
		t.Fatalf("backend %d, left in a transaction, served again", p)
	}

	l.lifetime = 0
	l.release(c)
	if h, _, _ := l.stats(); h != 0 {
		t.Fatalf("a connection past its lifetime: lanes hold %d, want 0", h)
	}
	l.lifetime = laneLifetime

	var held []*lent
	for i := range l.max {
		c, err := l.acquire(ctx, i%l.n)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	l.release(held[0])
	held = held[1:]
	// held[0] idles in lane 0: take it again so that a waiter waits.
	c, err = l.acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	held = append(held, c)
	errc := make(chan error, 1)
	lentc := make(chan *lent, 1)
	go func() {
		c, err := l.acquire(ctx, 1)
		lentc <- c
		errc <- err
	}()
	within(t, 10*time.Second, "a transaction waits", func() bool { _, _, w := l.stats(); return w == 1 })
	l.release(held[0])
	held[0] = <-lentc
	if err := <-errc; err != nil {
		t.Fatalf("the waiter got %v, want the released connection", err)
	}
	// Every connection is lent again; close fails the next waiter.
	go func() {
		_, err := l.acquire(ctx, 1)
		errc <- err
	}()
	within(t, 10*time.Second, "another transaction waits", func() bool { _, _, w := l.stats(); return w == 1 })
	l.close()
	select {
	case err := <-errc:
		if !errors.Is(err, errLanesClosed) {
			t.Fatalf("a waiter at close got %v, want errLanesClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close left a transaction waiting")
	}
	for _, c := range held {
		l.release(c)
	}
	if h, _, _ := l.stats(); h != 0 {
		t.Fatalf("after close and every release the lanes hold %d connections, want 0", h)
	}
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("after close and every release %d pool connections are out, want 0", n)
	}
	if _, err := l.acquire(ctx, 0); !errors.Is(err, errLanesClosed) {
		t.Fatalf("acquire after close: %v, want errLanesClosed", err)
	}
}

// A connection that went back to the pool returns to the lane it served,
// whose tenants it holds warm, when a lane borrows it again: the pool
// hands out whichever connection it got back last.
func TestLanesTakeTheirConnectionsBackFromThePool(t *testing.T) {
	t.Parallel()
	l, _ := newTestLanes(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pids := make([]int32, 2)
	for k := range pids {
		c, err := l.acquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		pids[k] = pid(t, ctx, c)
		l.release(c)
	}
	if pids[0] == pids[1] {
		t.Fatalf("lanes 0 and 1 share backend %d", pids[0])
	}
	// Both back to the pool, lane 1's last: the pool hands it out first.
	l.mu.Lock()
	l.linger = 0
	l.mu.Unlock()
	l.reap()
	if h, _, _ := l.stats(); h != 0 {
		t.Fatalf("after the reap the lanes hold %d connections, want 0", h)
	}
	l.mu.Lock()
	l.linger = time.Hour
	l.mu.Unlock()
	for _, k := range []int{0, 1} {
		c, err := l.acquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if p := pid(t, ctx, c); p != pids[k] {
			t.Fatalf("lane %d got backend %d back from the pool, want its own %d", k, p, pids[k])
		}
		l.release(c)
	}
}
