// Package limits keeps one tenant, or one client without a key, from
// taking more than its share of a Bulkhead server: the admission Gate in
// front of isolation.Registry.Run (a fair share of connections per
// tenant), token buckets per API key and per client address (Rates), and
// bounded per-tenant usage counters (Usage) behind `bulkhead tenant stats`.
// Every structure here is bounded whatever the number of tenants, keys or
// addresses, and every wait has a deadline.
package limits

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

var (
	// ErrTenantBusy is a Run refused because its tenant already runs, or
	// waits to run, as much as it may: the tenant's own load, answered
	// 429 with Retry-After.
	ErrTenantBusy = errors.New("too many requests of this tenant are running or waiting; retry shortly")
	// ErrBusy is a Run refused because the server's connections stayed
	// taken by other tenants for the whole bounded wait, or the queue of
	// all tenants is full: answered 503 with Retry-After.
	ErrBusy = errors.New("the server is busy; retry shortly")
)

// GateConfig configures a Gate.
type GateConfig struct {
	// MaxConcurrent is how many transactions one tenant may run at once in
	// one pool, unless its override (WithOverride) says otherwise; it is
	// never more than the pool's slots.
	MaxConcurrent int
	// MaxShare is the largest share of a pool's slots one tenant may hold,
	// overrides included (at least one slot); 0 or 1 leaves only the cap.
	// It keeps a small pool from going, nearly all of it, to one tenant.
	MaxShare float64
	// MaxQueued is how many Runs of one tenant may wait; one more is
	// refused at once with ErrTenantBusy.
	MaxQueued int
	// MaxQueuedTotal is how many Runs of all tenants together may wait;
	// one more is refused at once with ErrBusy.
	MaxQueuedTotal int
	// QueueTimeout bounds the wait for a slot.
	QueueTimeout time.Duration
	// Bounds bound the database work of every Run whose context carries
	// none of its own (isolation.WithBounds).
	Bounds isolation.Bounds
	// Pool names the pool t's transactions take their connections from,
	// and how many slots it has: the connections the Gate may hand out
	// for tenant work at once. Tenants of one pool share its slots.
	Pool func(t isolation.Tenant) (name string, slots int)
	// Observe, when set, is told of every Run: how long it waited for a
	// slot, whether it was refused, and how long it then held one.
	Observe func(t isolation.Tenant, o Outcome)
	// HeavyCap, when above 0, is the most slots a heavy tenant may hold
	// while another tenant of its pool is being served (its override
	// included): a tenant is heavy while the decaying mean of how long
	// its Runs hold a slot is HeavyAfter or more. 0 turns it off.
	HeavyCap int
	// HeavyAfter is the mean slot time from which a tenant is heavy.
	HeavyAfter time.Duration
}

// Outcome is what the Gate saw of one Run.
type Outcome struct {
	// Waited is how long the Run waited for a slot (0: it had one at once).
	Waited time.Duration
	// Rejected is set when the Run was refused and never ran.
	Rejected bool
	// Held is how long the Run held its slot: its time in the database,
	// the connection's acquisition included.
	Held time.Duration
}

// Gate is the admission control in front of the registry's Run: an
// isolation.Runner that runs each tenant's transactions on the Runner it
// wraps only once the tenant holds a slot of its pool.
//
// Why this mechanism: a pool (the serving pool that rls and schema tenants
// share, or the database strategy's connection budget) has a fixed number
// of connections, and what one tenant must not do is hold them while
// others wait. So each pool has as many slots as the Gate may hand out,
// each tenant may hold at most its cap of them (a semaphore per tenant,
// sized min(cap, MaxShare × slots)), and a slot that comes free while tenants wait
// goes to the waiting tenant holding the fewest slots (oldest waiter
// first among equals): max-min fair sharing, work-conserving — a lone
// tenant may use up to its cap, and a tenant over its fair share gets no
// new slot while anyone holding less waits. Weighted fair queueing would
// order requests by cost, which is not known before a transaction runs;
// the per-transaction bounds (statement_timeout and its siblings, in
// Bounds) cap that cost instead. Every wait is bounded (QueueTimeout, and
// the caller's context), and so are the queues: per tenant (MaxQueued)
// and in all (MaxQueuedTotal). A tenant's state lives only while it holds
// or waits for a slot, so memory is bounded by the slots and the queues.
//
// Slots count connections, not the database server's CPUs: eight month
// summaries of one tenant fit its cap and leave a free connection for
// everyone else, yet on a server with fewer cores they leave the others'
// one-row reads queueing for a CPU. So a tenant whose transactions run
// long (a decaying mean of its slot time of HeavyAfter or more: the cost
// is learned from the Runs it has had, since it is not known before one
// runs) holds at most HeavyCap slots while a tenant of the pool whose Runs
// are less than half as long is being served; alone, or beside tenants as
// heavy, it may still use its whole cap. HeavyCap is meant to
// be at most half the database server's cores. The heat of at most
// maxHeat tenants is remembered, those of longest ago dropped first.
//
// The caps are per process: with several replicas a tenant holds at most
// its cap in each. A Run is charged to the tenant it is bound to, a
// consolidated report's Runs to the tenants it reads.
//
// A slot is released in a deferred call: a panic in fn returns it. Gate is
// safe for concurrent use.
type Gate struct {
	inner isolation.Runner
	cfg   GateConfig

	mu     sync.Mutex
	pools  map[string]*pool
	heat   map[uuid.UUID]heat // tenants whose Runs have been long; bounded by maxHeat
	totals GateTotals
}

// heat is the decaying mean of how long one tenant's Runs held a slot.
type heat struct {
	mean time.Duration
	at   time.Time // when it last changed
}

const (
	// maxHeat bounds the tenants whose heat the Gate remembers.
	maxHeat = 4096
	// heatTTL is how long a tenant's heat lasts without a Run.
	heatTTL = time.Minute
	// heatWeight is the weight of the latest Run in the mean: the mean
	// halves in about three short Runs.
	heatWeight = 0.25
	// activeWindow is how recently another tenant must have been given a
	// slot for a heavy tenant's cap to apply.
	activeWindow = time.Second
)

// admitted is a tenant given a slot of a pool, and when.
type admitted struct {
	id uuid.UUID
	at time.Time
}

var _ isolation.Runner = (*Gate)(nil)

// pool is the state of one pool's slots. Guarded by Gate.mu.
type pool struct {
	slots   int
	held    int
	queued  int
	tenants map[uuid.UUID]*share // tenants holding or waiting for a slot
	recent  [2]admitted          // the two tenants given a slot last, latest first
}

// admit records that id was given a slot at now.
func (p *pool) admit(id uuid.UUID, now time.Time) {
	if p.recent[0].id != id {
		p.recent[1] = p.recent[0]
	}
	p.recent[0] = admitted{id, now}
}

// share is one tenant's part of a pool. Guarded by Gate.mu.
type share struct {
	id      uuid.UUID
	cap     int
	held    int
	waiters list.List // of *waiter, oldest first
}

type waiter struct {
	since   time.Time
	granted bool
	ready   chan struct{} // closed when granted
}

// NewGate returns a Gate running tenant work on inner as cfg says.
func NewGate(inner isolation.Runner, cfg GateConfig) *Gate {
	cfg.MaxConcurrent = max(cfg.MaxConcurrent, 1)
	cfg.MaxQueued = max(cfg.MaxQueued, 0)
	cfg.MaxQueuedTotal = max(cfg.MaxQueuedTotal, 0)
	if cfg.Pool == nil {
		cfg.Pool = func(isolation.Tenant) (string, int) { return "", cfg.MaxConcurrent }
	}
	return &Gate{inner: inner, cfg: cfg, pools: map[string]*pool{}, heat: map[uuid.UUID]heat{}}
}

// Override is what the control plane records for one tenant to replace
// the configured defaults; a zero field keeps the default.
type Override struct {
	// MaxConcurrent replaces GateConfig.MaxConcurrent for the tenant.
	MaxConcurrent int
}

type overrideKey struct{}

type override struct {
	tenant uuid.UUID
	o      Override
}

// WithOverride returns ctx carrying o for tenant: Runs under it that are
// bound to tenant use o. The HTTP layer sets it from the authenticated
// key's tenant, read in the same query as the key.
func WithOverride(ctx context.Context, tenant uuid.UUID, o Override) context.Context {
	return context.WithValue(ctx, overrideKey{}, override{tenant, o})
}

// shareOf is the most slots of a pool of slots one tenant may hold.
func (g *Gate) shareOf(slots int) int {
	if g.cfg.MaxShare <= 0 || g.cfg.MaxShare >= 1 {
		return slots
	}
	return max(int(float64(slots)*g.cfg.MaxShare), 1)
}

func (g *Gate) capOf(ctx context.Context, t isolation.Tenant) int {
	if o, ok := ctx.Value(overrideKey{}).(override); ok && o.tenant == t.ID && o.o.MaxConcurrent > 0 {
		return o.o.MaxConcurrent
	}
	return g.cfg.MaxConcurrent
}

// Run runs fn bound to t on the wrapped Runner, with opts, once t holds a slot of its
// pool, and gives the slot back when the transaction is over. It returns
// ErrTenantBusy or ErrBusy, without running fn, when no slot can be had
// within the bounds; the context's error when it ends first. The work is
// bounded by the GateConfig's Bounds unless ctx carries its own.
func (g *Gate) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	begin := time.Now()
	release, queued, err := g.acquire(ctx, t)
	var waited time.Duration
	if queued {
		waited = time.Since(begin)
	}
	if err != nil {
		if g.cfg.Observe != nil && ctx.Err() == nil {
			g.cfg.Observe(t, Outcome{Waited: waited, Rejected: true})
		}
		return err
	}
	start := time.Now()
	defer func() {
		held := time.Since(start)
		release(held)
		if g.cfg.Observe != nil {
			g.cfg.Observe(t, Outcome{Waited: waited, Held: held})
		}
	}()
	if _, ok := isolation.BoundsFrom(ctx); !ok {
		ctx = isolation.WithBounds(ctx, g.cfg.Bounds)
	}
	return g.inner.Run(ctx, t, fn, opts...)
}

// acquire takes a slot of t's pool, waiting boundedly, and returns the
// function that gives it back (once, told how long it was held), and
// whether it had to queue.
func (g *Gate) acquire(ctx context.Context, t isolation.Tenant) (release func(time.Duration), queued bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	name, slots := g.cfg.Pool(t)
	slots = max(slots, 1)
	g.mu.Lock()
	p := g.pools[name]
	if p == nil {
		p = &pool{tenants: map[uuid.UUID]*share{}}
		g.pools[name] = p
	}
	p.slots = slots
	s := p.tenants[t.ID]
	if s == nil {
		s = &share{id: t.ID}
		p.tenants[t.ID] = s
	}
	now := time.Now()
	s.cap = min(g.capOf(ctx, t), g.shareOf(slots))
	if g.outweighsLocked(p, t.ID, now) {
		s.cap = min(s.cap, g.cfg.HeavyCap)
	}
	g.dispatchLocked(p) // the slots or a cap may have grown
	if s.waiters.Len() == 0 && s.held < s.cap && p.held < p.slots {
		s.held++
		p.held++
		p.admit(t.ID, now)
		g.mu.Unlock()
		return g.releaser(p, s), false, nil
	}
	var refused error
	switch {
	case s.waiters.Len() >= g.cfg.MaxQueued:
		refused = ErrTenantBusy
	case p.queued >= g.cfg.MaxQueuedTotal:
		refused = ErrBusy
	}
	if refused != nil {
		g.countLocked(refused, false)
		g.forgetLocked(p, s)
		g.mu.Unlock()
		return nil, false, refused
	}
	w := &waiter{since: time.Now(), ready: make(chan struct{})}
	e := s.waiters.PushBack(w)
	p.queued++
	g.mu.Unlock()

	timer := time.NewTimer(g.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case <-w.ready:
		g.mu.Lock()
		g.countLocked(nil, true)
		g.mu.Unlock()
		return g.releaser(p, s), true, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted { // granted as the wait ended: take it
		g.countLocked(nil, true)
		return g.releaser(p, s), true, nil
	}
	s.waiters.Remove(e)
	p.queued--
	// Whose fault was the wait: the tenant's own cap, or a pool full of
	// others' work?
	ownCap := s.held >= s.cap
	g.forgetLocked(p, s)
	if err := ctx.Err(); err != nil {
		g.countLocked(nil, true)
		return nil, true, err
	}
	refused = ErrBusy
	if ownCap {
		refused = ErrTenantBusy
	}
	g.countLocked(refused, true)
	return nil, true, refused
}

// releaser returns the function giving s's slot of p back, once, told how
// long the slot was held.
func (g *Gate) releaser(p *pool, s *share) func(time.Duration) {
	var once sync.Once
	return func(held time.Duration) {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.warmLocked(s.id, held, time.Now())
			s.held--
			p.held--
			g.dispatchLocked(p)
			g.forgetLocked(p, s)
		})
	}
}

// dispatchLocked hands free slots of p to waiters: each to the oldest
// waiter of the waiting tenant, under its cap, that holds the fewest slots.
func (g *Gate) dispatchLocked(p *pool) {
	for p.held < p.slots && p.queued > 0 {
		var best *share
		var bestSince time.Time
		for _, s := range p.tenants {
			if s.waiters.Len() == 0 || s.held >= s.cap {
				continue
			}
			since := s.waiters.Front().Value.(*waiter).since
			if best == nil || s.held < best.held || (s.held == best.held && since.Before(bestSince)) {
				best, bestSince = s, since
			}
		}
		if best == nil {
			return // everyone waiting is at their cap
		}
		w := best.waiters.Remove(best.waiters.Front()).(*waiter)
		p.queued--
		best.held++
		p.held++
		p.admit(best.id, time.Now())
		w.granted = true
		close(w.ready)
	}
}

// meanLocked is id's heat: the decaying mean of its Runs' slot time, or 0
// when none of its recent Runs was long.
func (g *Gate) meanLocked(id uuid.UUID, now time.Time) time.Duration {
	h, ok := g.heat[id]
	if !ok || now.Sub(h.at) >= heatTTL {
		return 0
	}
	return h.mean
}

// outweighsLocked reports whether id is a heavy tenant of p (its mean slot
// time HeavyAfter or more) while a tenant whose Runs are less than half as
// long holds or waits for a slot of p, or was given one within
// activeWindow. Compared with the others rather than with HeavyAfter
// alone, because a tenant that keeps the database's cores busy makes
// everyone's Runs long: capping every tenant whose Runs have grown would
// cap its victims too, and they would queue behind their own cap.
func (g *Gate) outweighsLocked(p *pool, id uuid.UUID, now time.Time) bool {
	if g.cfg.HeavyCap <= 0 {
		return false
	}
	mean := g.meanLocked(id, now)
	if mean < g.cfg.HeavyAfter {
		return false
	}
	lighter := func(other uuid.UUID) bool { return other != id && 2*g.meanLocked(other, now) < mean }
	for other := range p.tenants {
		if lighter(other) {
			return true
		}
	}
	for _, r := range p.recent {
		if r.id != uuid.Nil && now.Sub(r.at) < activeWindow && lighter(r.id) {
			return true
		}
	}
	return false
}

// warmLocked folds a Run of id that held its slot for held into id's heat.
// Only tenants with a long Run are remembered, and at most maxHeat of
// them: those whose heat has cooled or is oldest make room.
func (g *Gate) warmLocked(id uuid.UUID, held time.Duration, now time.Time) {
	if g.cfg.HeavyCap <= 0 {
		return
	}
	h, ok := g.heat[id]
	if !ok || now.Sub(h.at) >= heatTTL {
		if held < g.cfg.HeavyAfter {
			delete(g.heat, id)
			return
		}
		h = heat{mean: held}
	} else {
		h.mean = time.Duration(heatWeight*float64(held) + (1-heatWeight)*float64(h.mean))
	}
	h.at = now
	if h.mean < g.cfg.HeavyAfter/4 {
		delete(g.heat, id) // cooled: forget it
		return
	}
	if !ok && len(g.heat) >= maxHeat {
		g.coolLocked(now)
	}
	g.heat[id] = h
}

// coolLocked makes room in g.heat: it drops every expired entry, and if
// none had expired, the one changed longest ago.
func (g *Gate) coolLocked(now time.Time) {
	var oldest uuid.UUID
	var oldestAt time.Time
	dropped := false
	for id, h := range g.heat {
		if now.Sub(h.at) >= heatTTL {
			delete(g.heat, id)
			dropped = true
			continue
		}
		if oldestAt.IsZero() || h.at.Before(oldestAt) {
			oldest, oldestAt = id, h.at
		}
	}
	if !dropped {
		delete(g.heat, oldest)
	}
}

// forgetLocked drops s from p once it neither holds nor waits for a slot,
// so that the Gate keeps no state for idle tenants.
func (g *Gate) forgetLocked(p *pool, s *share) {
	if s.held == 0 && s.waiters.Len() == 0 && p.tenants[s.id] == s {
		delete(p.tenants, s.id)
	}
}

// GateTotals count, since the Gate was made, the Runs that waited for a
// slot and those refused, by error.
type GateTotals struct {
	Waits, TenantBusy, ServerBusy int64
}

// Totals returns the Gate's counts so far.
func (g *Gate) Totals() GateTotals {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.totals
}

// count records the outcome of an acquire; g.mu must be held.
func (g *Gate) countLocked(err error, waited bool) {
	switch {
	case errors.Is(err, ErrTenantBusy):
		g.totals.TenantBusy++
	case errors.Is(err, ErrBusy):
		g.totals.ServerBusy++
	}
	if waited {
		g.totals.Waits++
	}
}

// GateStats is a pool's state at one moment.
type GateStats struct {
	// Slots, Held and Queued are the pool's slots, those held and the
	// Runs waiting for one.
	Slots, Held, Queued int
	// Tenants is how many tenants hold or wait for a slot.
	Tenants int
}

// Stats returns the state of every pool, by name.
func (g *Gate) Stats() map[string]GateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]GateStats, len(g.pools))
	for name, p := range g.pools {
		out[name] = GateStats{Slots: p.slots, Held: p.held, Queued: p.queued, Tenants: len(p.tenants)}
	}
	return out
}
