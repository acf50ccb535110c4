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

// errSurplus is a connection attempt for a tenant that has a connection
// already, refused at once while the budget is spent and no idle
// connection may be closed for it (evictIdle, surplus): the Run waits for
// its own tenant's connection instead. It is an errNoSlot.
var errSurplus = fmt.Errorf("%w: the tenant has a connection to wait for", errNoSlot)

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
	// it spares the pools a Run is about to use. surplus: for a taker
	// whose pool has a connection already. Both close only spare
	// connections (evictIdle). It is called without mu held.
	evict func(except *tenantPool, ahead, surplus bool) bool

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
	// under pressure (takers with no connection of their tenant wait in
	// line): spare idle connections the next takers would evict are
	// closed ahead of them. A slot comes back only once the server
	// has ended the session, which on a busy server takes as long as
	// starting one; a taker that finds a slot free dials at once instead
	// of waiting for that, so each cold start costs one backend start,
	// not an end and a start in turn. The victims are the ones the next
	// takers would have closed anyway; the price is the reserve's
	// connections not kept warm while under pressure. A tenth of the
	// budget covers the takers that arrive while a session ends at a few
	// hundred cold starts a second; below 10 slots, none is held back.
	// Only spare connections, and only while such takers wait: closing a
	// tenant's only connection ahead of need makes that tenant a cold
	// taker on its next request, so the reserve would feed itself, and
	// with the active tenants within the budget turn every warm
	// connection over under load.
	reserve   int
	cold      int  // waiters whose pool has no connection: the pressure
	toppingUp bool // a taker is closing connections for the reserve

	freed signal // notified when a slot goes back to the budget
}

type waiter struct {
	pool    *tenantPool // the pool that needs the slot; nil: no pool
	surplus bool        // the pool has a connection already
	granted chan struct{}
}

func newBudget(max int) *budget {
	return &budget{max: max, reserve: max / 10, evict: func(*tenantPool, bool, bool) bool { return false }}
}

// take takes a slot for a connection of p, waiting until one is free or ctx
// ends. It returns ctx's error when it ends first, and then holds no slot.
//
// A taker whose pool has a connection already (surplus) does not wait in
// line while every slot is taken: it closes another pool's idle surplus
// connection worth less there than another is to p, or the only
// connection of a pool unused for a while (evictIdle), or, when there is
// none, returns errSurplus at once, and its Run waits for p's own
// connection. Closing a warm tenant's only connection for a busy tenant's
// second would make the warm tenant dial on its next request, and evict
// another in turn: with the active tenants within the budget, the pools
// would trade slots under load, each trade a backend start. Nor does a
// surplus taker count as pressure for the reserve (topUp): only tenants
// with no connection need the reserve's free slots.
func (b *budget) take(ctx context.Context, p *tenantPool) error {
	surplus := p.established() > 0 // before mu: it takes the pool's lock
	b.mu.Lock()
	if b.used < b.max && b.waiters.Len() == 0 {
		b.used++
		b.high = max(b.high, b.used)
		b.mu.Unlock()
		b.topUp(p)
		return nil
	}
	if surplus {
		b.mu.Unlock()
		if !b.evict(p, false, true) {
			return errSurplus
		}
		b.mu.Lock()
	}
	w := &waiter{pool: p, surplus: surplus, granted: make(chan struct{})}
	e := b.waiters.PushBack(w)
	if !surplus {
		b.cold++
	}
	b.mu.Unlock()

	tick := time.NewTicker(evictEvery)
	defer tick.Stop()
	for {
		if b.short() {
			b.evict(p, false, surplus)
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
				b.remove(e)
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
		close(b.remove(e).granted)
		return
	}
	b.used--
	b.freed.notify()
}

// remove takes e out of the line and returns its waiter; b.mu is held.
func (b *budget) remove(e *list.Element) *waiter {
	w := b.waiters.Remove(e).(*waiter)
	if !w.surplus {
		b.cold--
	}
	return w
}

// topUp closes idle connections of pools other than p, while the budget
// is under pressure, until reserve slots are free or closing beyond what
// the waiting takers will get. One taker at a time does it.
func (b *budget) topUp(p *tenantPool) {
	b.mu.Lock()
	if b.reserve == 0 || b.toppingUp || b.cold == 0 {
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
		short := b.cold > 0 && b.max-b.used+b.closing-b.waiters.Len() < b.reserve
		b.mu.Unlock()
		if !short || !b.evict(p, true, false) {
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

// coldWait reports whether a taker whose pool has no connection waits
// for a slot: a surplus connection released then closes instead of
// idling, so that the waiter gets its slot. A taker that has a
// connection already (surplus) does not count: closing one tenant's
// surplus for another's would trade slots between busy tenants, each
// trade a backend start.
func (b *budget) coldWait() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cold > 0
}

// room reports whether a taker would get a slot at once: one is free and
// nobody waits in line for it.
func (b *budget) room() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used < b.max && b.waiters.Len() == 0
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
