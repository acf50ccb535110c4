package database

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeWait bounds how long closing a tenant connection waits for the server
// to end the session before the connection's slot is given back. A backend
// leaves pg_stat_activity before its socket closes, so once the server has
// closed its end the slot is free on the server too; only a server that
// stays silent this long is trusted to follow.
const closeWait = 10 * time.Second

// errNoSlot is a connection attempt that gave up waiting for a slot of the
// budget: back-pressure in this process, not a sign that the server is down.
var errNoSlot = errors.New("no free connection in isolation.database.max_connections")

// evictEvery is how often a waiter for a slot looks again for an idle
// connection to close: connections can turn idle without passing a release
// hook (a connection finished for an Acquire that gave up).
const evictEvery = 20 * time.Millisecond

// budget is the process-wide cap on open connections of the tenant pools:
// a slot is taken before a connection is dialled and given back only once
// the server has closed that connection. While the budget is spent, takers
// queue in arrival order, each asking the pool cache to close an idle
// connection of another pool; a freed slot goes to the first taker in line.
// Under that pressure it also keeps a few slots free ahead of need (see
// reserve). It is safe for concurrent use.
type budget struct {
	// evict closes one idle connection of a pool other than except (nil:
	// of any pool), in the order of compareVictims, and reports whether it
	// found one. ahead: for the reserve, not for a taker that waits; then
	// it spares the pools a Run is about to use. It is called without mu
	// held.
	evict func(except *tenantPool, ahead bool) bool

	// dials counts the connections dialled (each a backend start when it
	// succeeds): how often a request found its tenant cold.
	dials atomic.Uint64

	mu      sync.Mutex
	max     int
	used    int
	high    int       // most slots taken at once
	closing int       // connections closing: their slots are on the way
	waiters list.List // of *waiter, first in line at the front
	// reserve is how many slots the budget keeps free, or closing, while
	// under pressure: the idle connections the next takers would evict
	// are closed ahead of them. A slot comes back only once the server
	// has ended the session, which on a busy server takes as long as
	// starting one; a taker that finds a slot free dials at once instead
	// of waiting for that, so each cold start costs one backend start,
	// not an end and a start in turn. The victims are the ones the next
	// takers would have closed anyway; the price is the reserve's
	// connections not kept warm while under pressure. A tenth of the
	// budget covers the takers that arrive while a session ends at a few
	// hundred cold starts a second; below 10 slots, none is held back.
	reserve   int
	pressed   time.Time // when a taker last found every slot taken
	toppingUp bool      // a taker is closing connections for the reserve

	freed signal // notified when a slot goes back to the budget
}

type waiter struct {
	pool    *tenantPool // the pool that needs the slot; nil: no pool
	granted chan struct{}
}

// pressureFor is how long after a taker last found every slot taken the
// budget keeps its reserve: with no such taker for this long, the active
// tenants fit, and every connection may stay warm.
const pressureFor = time.Second

func newBudget(max int) *budget {
	return &budget{max: max, reserve: max / 10, evict: func(*tenantPool, bool) bool { return false }}
}

// take takes a slot for a connection of p, waiting until one is free or ctx
// ends. It returns ctx's error when it ends first, and then holds no slot.
func (b *budget) take(ctx context.Context, p *tenantPool) error {
	b.mu.Lock()
	if b.used < b.max && b.waiters.Len() == 0 {
		b.used++
		b.high = max(b.high, b.used)
		b.mu.Unlock()
		b.topUp(p)
		return nil
	}
	b.pressed = time.Now()
	w := &waiter{pool: p, granted: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()

	tick := time.NewTicker(evictEvery)
	defer tick.Stop()
	for {
		if b.short() {
			b.evict(p, false)
		}
		select {
		case <-w.granted:
			b.topUp(p)
			return nil
		case <-tick.C:
		case <-ctx.Done():
			b.mu.Lock()
			select {
			case <-w.granted: // handed a slot as ctx ended: pass it on
				b.mu.Unlock()
				b.give()
			default:
				b.waiters.Remove(e)
				b.mu.Unlock()
			}
			return ctx.Err()
		}
	}
}

// give gives a slot back: to the first waiter in line, or to the budget.
func (b *budget) give() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.waiters.Front(); e != nil {
		close(b.waiters.Remove(e).(*waiter).granted)
		return
	}
	b.used--
	b.freed.notify()
}

// topUp closes idle connections of pools other than p, while the budget
// is under pressure, until reserve slots are free or closing beyond what
// the waiting takers will get. One taker at a time does it.
func (b *budget) topUp(p *tenantPool) {
	b.mu.Lock()
	if b.reserve == 0 || b.toppingUp || time.Since(b.pressed) > pressureFor {
		b.mu.Unlock()
		return
	}
	b.toppingUp = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.toppingUp = false
		b.mu.Unlock()
	}()
	for {
		b.mu.Lock()
		short := b.max-b.used+b.closing-b.waiters.Len() < b.reserve
		b.mu.Unlock()
		if !short || !b.evict(p, true) {
			return
		}
	}
}

// short reports whether fewer connections are closing than takers wait:
// then a waiter closes an idle one rather than wait for a slot that no
// close is bringing.
func (b *budget) short() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closing < b.waiters.Len()
}

// closing records that a connection holding a slot started to close; done
// gives its slot back when it has.
func (b *budget) closeStarted() {
	b.mu.Lock()
	b.closing++
	b.mu.Unlock()
}

func (b *budget) closeDone() {
	b.mu.Lock()
	b.closing--
	b.mu.Unlock()
	b.give()
}

// othersWait reports whether a connection of a pool other than p is
// waiting for a slot: a connection p releases then closes instead of
// idling, so that the waiter gets its slot.
func (b *budget) othersWait(p *tenantPool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for e := b.waiters.Front(); e != nil; e = e.Next() {
		if e.Value.(*waiter).pool != p {
			return true
		}
	}
	return false
}

// full reports whether every slot is taken.
func (b *budget) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used >= b.max
}

// stats returns the slots taken, the most ever taken at once, and the
// number of takers waiting.
func (b *budget) stats() (used, high, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.high, b.waiters.Len()
}

// dialer wraps dial so that every connection it makes holds a slot of b
// from before it is dialled until the server has closed it. wait, when it
// returns a context, also ends the wait for a slot: the Acquire the dial is
// for, which may give up before the dial does.
func (b *budget) dialer(p *tenantPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		wait := ctx
		if acq, ok := ctx.Value(acquireKey{}).(context.Context); ok {
			var cancel context.CancelFunc
			wait, cancel = context.WithCancel(ctx)
			stop := context.AfterFunc(acq, cancel)
			defer func() { stop(); cancel() }()
		}
		if err := b.take(wait, p); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoSlot, err)
		}
		b.dials.Add(1)
		c, err := dial(ctx, network, addr)
		if err != nil {
			b.give()
			return nil, err
		}
		return &slotConn{Conn: c, b: b}, nil
	}
}

// acquireKey carries, in the context of a pool Acquire, that context
// itself: the pool dials on a context of its own, which keeps the values
// but not the cancellation of the Acquire's.
type acquireKey struct{}

// slotConn is a network connection holding a slot of the budget; closing
// it waits for the server to close its end, then gives the slot back.
type slotConn struct {
	net.Conn
	b       *budget
	started sync.Once
	once    sync.Once
	err     error
}

// closing counts c among the connections closing, once: Close does it, and
// an eviction does it before it hands c to a goroutine to close, so that
// the budget's count of closing connections is right at once.
func (c *slotConn) closing() { c.started.Do(c.b.closeStarted) }

// Close half-closes the connection, so that a server waiting for input
// sees its end, waits up to closeWait for the server to close its side,
// closes, and gives the slot back. It is idempotent.
func (c *slotConn) Close() error {
	c.once.Do(func() {
		c.closing()
		defer c.b.closeDone()
		if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite() // a broken connection reads EOF at once below
		}
		if c.Conn.SetReadDeadline(time.Now().Add(closeWait)) == nil {
			_, _ = io.Copy(io.Discard, c.Conn) // until EOF, an error or the deadline
		}
		c.err = c.Conn.Close()
	})
	return c.err
}
