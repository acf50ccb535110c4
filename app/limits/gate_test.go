package limits

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// waitFor bounds every wait of these tests: they fail, never hang.
const waitFor = 30 * time.Second

// blocking is a strategy whose Run holds until released, telling entered
// when it starts; it records the bounds each Run was given.
type blocking struct {
	entered chan isolation.Tenant
	release chan struct{}

	mu     sync.Mutex
	bounds []isolation.Bounds
}

func newBlocking() *blocking {
	return &blocking{entered: make(chan isolation.Tenant, 100), release: make(chan struct{})}
}

func (b *blocking) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, _ ...isolation.RunOption) error {
	bd, _ := isolation.BoundsFrom(ctx)
	b.mu.Lock()
	b.bounds = append(b.bounds, bd)
	b.mu.Unlock()
	b.entered <- t
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return fn(nil)
}

func tenant(name string) isolation.Tenant {
	return isolation.Tenant{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)), Slug: name, Strategy: isolation.RLS}
}

func gate(inner isolation.Runner, slots int, mod func(*GateConfig)) *Gate {
	cfg := GateConfig{
		MaxConcurrent: 2, MaxQueued: 2, MaxQueuedTotal: 10, QueueTimeout: time.Hour,
		Pool: func(isolation.Tenant) (string, int) { return "serving", slots },
	}
	if mod != nil {
		mod(&cfg)
	}
	return NewGate(inner, cfg)
}

// run starts a Run of t on g in the background; its error arrives on the
// returned channel.
func run(ctx context.Context, g *Gate, t isolation.Tenant) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, t, func(pgx.Tx) error { return nil }) }()
	return done
}

func entered(t *testing.T, b *blocking) isolation.Tenant {
	t.Helper()
	select {
	case tn := <-b.entered:
		return tn
	case <-time.After(waitFor):
		t.Fatal("no Run reached the strategy")
	}
	return isolation.Tenant{}
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitFor):
		t.Fatal("a Run never returned")
	}
	return nil
}

// waitQueued waits until the pool has n Runs waiting.
func waitQueued(t *testing.T, g *Gate, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for g.Stats()["serving"].Queued != n {
		if time.Now().After(deadline) {
			t.Fatalf("queued %+v, want %d", g.Stats(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A tenant at its cap waits; one more than its queue holds is refused at
// once with ErrTenantBusy, while another tenant is still let in.
func TestGateCapsATenant(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 10, nil)
	ctx := context.Background()
	noisy, quiet := tenant("noisy"), tenant("quiet")
	var running []<-chan error
	for range 2 {
		running = append(running, run(ctx, g, noisy))
		entered(t, b)
	}
	for range 2 { // its queue
		running = append(running, run(ctx, g, noisy))
	}
	waitQueued(t, g, 2)
	if err := result(t, run(ctx, g, noisy)); !errors.Is(err, ErrTenantBusy) {
		t.Fatalf("the fifth Run of a tenant capped at 2, queue 2: %v, want ErrTenantBusy", err)
	}
	running = append(running, run(ctx, g, quiet))
	if got := entered(t, b); got.ID != quiet.ID {
		t.Fatalf("%s ran, want the quiet tenant", got.Slug)
	}
	close(b.release)
	for _, done := range running {
		if err := result(t, done); err != nil {
			t.Error(err)
		}
	}
	if st := g.Stats()["serving"]; st.Held != 0 || st.Queued != 0 || st.Tenants != 0 {
		t.Errorf("after every Run: %+v, want nothing held and no tenant kept", st)
	}
}

// A slot that comes free while several tenants wait goes to the one
// holding the fewest: the noisy tenant, already holding two, waits behind
// a tenant holding none, even though it asked first.
func TestGateGivesFreedSlotsToTheTenantHoldingFewest(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 3, func(c *GateConfig) { c.MaxConcurrent = 3 })
	ctx := context.Background()
	noisy, quiet := tenant("noisy"), tenant("quiet")
	var held []<-chan error
	for range 3 {
		held = append(held, run(ctx, g, noisy))
		entered(t, b)
	}
	noisyWaits := run(ctx, g, noisy)
	waitQueued(t, g, 1)
	quietWaits := run(ctx, g, quiet)
	waitQueued(t, g, 2)
	b.release <- struct{}{} // one of the noisy Runs ends
	if got := entered(t, b); got.ID != quiet.ID {
		t.Fatalf("the freed slot went to %s, want the quiet tenant (holding none)", got.Slug)
	}
	close(b.release)
	for _, done := range append(held, noisyWaits, quietWaits) {
		if err := result(t, done); err != nil {
			t.Error(err)
		}
	}
}

// A bounded wait ends in ErrTenantBusy when the tenant's own cap kept it
// out, in ErrBusy when other tenants' work filled the pool; a full queue of
// all tenants refuses at once with ErrBusy.
func TestGateWaitsAreBounded(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 2, func(c *GateConfig) {
		c.MaxConcurrent, c.QueueTimeout, c.MaxQueuedTotal = 1, 20*time.Millisecond, 2
	})
	ctx := context.Background()
	a, other, third := tenant("a"), tenant("b"), tenant("c")
	holdA := run(ctx, g, a)
	entered(t, b)
	if err := result(t, run(ctx, g, a)); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("a over its own cap after the wait: %v, want ErrTenantBusy", err)
	}
	holdB := run(ctx, g, other)
	entered(t, b)
	if err := result(t, run(ctx, g, third)); !errors.Is(err, ErrBusy) {
		t.Errorf("c, under its cap, in a full pool after the wait: %v, want ErrBusy", err)
	}
	tot := g.Totals()
	if tot.TenantBusy != 1 || tot.ServerBusy != 1 {
		t.Errorf("totals %+v, want one of each refusal", tot)
	}
	// The queue of all tenants (2) full: the next is refused at once.
	g2 := gate(b, 1, func(c *GateConfig) { c.MaxConcurrent, c.MaxQueuedTotal = 1, 2 })
	hold := run(ctx, g2, a)
	entered(t, b)
	w1, w2 := run(ctx, g2, other), run(ctx, g2, third)
	waitQueued(t, g2, 2)
	if err := result(t, run(ctx, g2, tenant("d"))); !errors.Is(err, ErrBusy) {
		t.Errorf("with the queue of all tenants full: %v, want ErrBusy", err)
	}
	close(b.release)
	for _, done := range []<-chan error{holdA, holdB, hold, w1, w2} {
		if err := result(t, done); err != nil {
			t.Error(err)
		}
	}
}

// A waiting Run whose context ends returns the context's error and leaves
// the queue.
func TestGateWaitEndsWithTheContext(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 1, nil)
	hold := run(context.Background(), g, tenant("a"))
	entered(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	waiting := run(ctx, g, tenant("b"))
	waitQueued(t, g, 1)
	cancel()
	if err := result(t, waiting); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	if st := g.Stats()["serving"]; st.Queued != 0 {
		t.Errorf("after the cancelled wait: %+v", st)
	}
	close(b.release)
	if err := result(t, hold); err != nil {
		t.Error(err)
	}
}

// A panic in fn gives the slot back: more panics than the pool has slots,
// and the pool still serves.
func TestGatePanicReturnsTheSlot(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	close(b.release)
	g := gate(b, 2, nil)
	for i := range 5 {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("panic %d did not propagate", i)
				}
			}()
			_ = g.Run(context.Background(), tenant("a"), func(pgx.Tx) error { panic("boom") })
		}()
		await.Recv(t, b.entered, "the panicking Run to reach the strategy")
	}
	if st := g.Stats()["serving"]; st.Held != 0 {
		t.Fatalf("after the panics: %+v", st)
	}
	if err := result(t, run(context.Background(), g, tenant("a"))); err != nil {
		t.Fatal(err)
	}
}

// The configured bounds reach the strategy unless the context carries its
// own; a tenant's override in the context replaces its cap.
func TestGateBoundsAndOverrides(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	close(b.release)
	def := isolation.Bounds{Statement: time.Second, Lock: 2 * time.Second, IdleInTransaction: 3 * time.Second}
	g := gate(b, 5, func(c *GateConfig) { c.Bounds, c.MaxConcurrent, c.MaxQueued = def, 1, 0 })
	a := tenant("a")
	if err := g.Run(context.Background(), a, func(pgx.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	own := isolation.Bounds{Statement: time.Minute}
	if err := g.Run(isolation.WithBounds(context.Background(), own), a, func(pgx.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if b.bounds[0] != def || b.bounds[1] != own {
		t.Errorf("bounds given %+v, want %+v then %+v", b.bounds, def, own)
	}

	// Cap 1, no queue: a second concurrent Run is refused — unless the
	// tenant's override raises its cap.
	hold := newBlocking()
	g = gate(hold, 5, func(c *GateConfig) { c.MaxConcurrent, c.MaxQueued = 1, 0 })
	first := run(context.Background(), g, a)
	entered(t, hold)
	if err := result(t, run(context.Background(), g, a)); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("second Run at cap 1: %v", err)
	}
	ctx := WithOverride(context.Background(), a.ID, Override{MaxConcurrent: 2})
	second := run(ctx, g, a)
	entered(t, hold)
	other := WithOverride(context.Background(), tenant("x").ID, Override{MaxConcurrent: 9})
	if err := result(t, run(other, g, a)); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("another tenant's override applied to a: %v", err)
	}
	close(hold.release)
	for _, done := range []<-chan error{first, second} {
		if err := result(t, done); err != nil {
			t.Error(err)
		}
	}
}

// Whatever the number of tenants, the Gate keeps state only for those
// holding or waiting for a slot.
func TestGateStateIsBounded(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	close(b.release)
	g := gate(b, 4, nil)
	for i := range 1000 {
		if err := g.Run(context.Background(), tenant(fmt.Sprint(i)), func(pgx.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		await.Recv(t, b.entered, "the Run to reach the strategy")
	}
	if st := g.Stats()["serving"]; st.Tenants != 0 {
		t.Errorf("after 1000 tenants came and went: %+v", st)
	}
}

// Observe hears of every Run: a wait only when the Run queued, a
// rejection when it was refused, and the time it held its slot.
func TestGateObserves(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	var mu sync.Mutex
	var seen []Outcome
	g := gate(b, 1, func(c *GateConfig) {
		c.MaxConcurrent, c.MaxQueued = 1, 1
		c.Observe = func(_ isolation.Tenant, o Outcome) {
			mu.Lock()
			seen = append(seen, o)
			mu.Unlock()
		}
	})
	ctx := context.Background()
	first := run(ctx, g, tenant("a"))
	entered(t, b)
	second := run(ctx, g, tenant("a"))
	waitQueued(t, g, 1)
	if err := result(t, run(ctx, g, tenant("a"))); !errors.Is(err, ErrTenantBusy) {
		t.Fatalf("third: %v", err)
	}
	close(b.release)
	for _, done := range []<-chan error{first, second} {
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var waits, rejections, immediate int
	for _, o := range seen {
		switch {
		case o.Rejected:
			rejections++
		case o.Waited > 0:
			waits++
		default:
			immediate++
		}
	}
	if len(seen) != 3 || waits != 1 || rejections != 1 || immediate != 1 {
		t.Errorf("outcomes %+v: want one immediate, one that waited, one refused", seen)
	}
}

// No tenant holds more than MaxShare of a pool's slots, whatever its cap;
// the share is at least one slot.
func TestGateMaxShare(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 4, func(c *GateConfig) { c.MaxConcurrent, c.MaxQueued, c.MaxShare = 8, 0, 0.5 })
	ctx := context.Background()
	a := tenant("a")
	held := []<-chan error{run(ctx, g, a), run(ctx, g, a)}
	entered(t, b)
	entered(t, b)
	if err := result(t, run(ctx, g, a)); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("a third Run with half of 4 slots as the share: %v, want ErrTenantBusy", err)
	}
	over := WithOverride(ctx, a.ID, Override{MaxConcurrent: 100})
	if err := result(t, run(over, g, a)); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("an override above the share: %v, want ErrTenantBusy", err)
	}
	tiny := gate(b, 1, func(c *GateConfig) { c.MaxShare = 0.1 })
	held = append(held, run(ctx, tiny, a))
	entered(t, b)
	close(b.release)
	for _, done := range held {
		if err := result(t, done); err != nil {
			t.Error(err)
		}
	}
}

// A tenant whose Runs are long holds at most HeavyCap slots while another
// tenant is served, and its whole cap when it is alone.
func TestGateHoldsAHeavyTenantToItsHeavyCap(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	// Every Run counts as long: the test depends on no clock.
	g := gate(b, 10, func(c *GateConfig) { c.MaxConcurrent, c.MaxQueued, c.HeavyCap, c.HeavyAfter = 4, 4, 1, time.Nanosecond })
	ctx := context.Background()
	heavy, quiet := tenant("heavy"), tenant("quiet")

	// Learn that heavy's Runs are long.
	first := run(ctx, g, heavy)
	entered(t, b)
	b.release <- struct{}{}
	if err := result(t, first); err != nil {
		t.Fatal(err)
	}

	// Alone, it may use its whole cap.
	var alone []<-chan error
	for range 4 {
		alone = append(alone, run(ctx, g, heavy))
		entered(t, b)
	}
	if s := g.Stats()["serving"]; s.Held != 4 || s.Queued != 0 {
		t.Fatalf("heavy alone: %+v, want 4 held and none queued", s)
	}
	for _, done := range alone {
		b.release <- struct{}{}
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}

	// While quiet is served, heavy gets one slot; its second Run waits,
	// though the pool and its own cap have room.
	q := run(ctx, g, quiet)
	entered(t, b)
	h1 := run(ctx, g, heavy)
	entered(t, b)
	h2 := run(ctx, g, heavy)
	waitQueued(t, g, 1)
	if s := g.Stats()["serving"]; s.Held != 2 {
		t.Fatalf("heavy beside quiet: %+v, want 2 held (quiet's and one of heavy's)", s)
	}
	// Quiet, a fresh tenant, is not heavy: it is let in beside heavy.
	q2 := run(ctx, g, quiet)
	entered(t, b)
	close(b.release) // every Run, h2 once it has a slot, goes through
	for _, done := range []<-chan error{q, h1, q2, h2} {
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}
}

// The Gate remembers the heat of at most maxHeat tenants, and forgets a
// tenant whose Runs have become short.
func TestGateHeatIsBounded(t *testing.T) {
	t.Parallel()
	g := gate(newBlocking(), 10, func(c *GateConfig) { c.HeavyCap, c.HeavyAfter = 1, time.Second })
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range maxHeat + 100 {
		g.warmLocked(uuid.New(), time.Minute, now.Add(time.Duration(i)))
	}
	if len(g.heat) > maxHeat {
		t.Errorf("%d tenants' heat remembered, want at most %d", len(g.heat), maxHeat)
	}
	id := uuid.New()
	g.warmLocked(id, time.Millisecond, now)
	if _, ok := g.heat[id]; ok {
		t.Error("a tenant whose only Run was short is remembered")
	}
	g.warmLocked(id, 2*time.Second, now)
	if g.meanLocked(id, now) != 2*time.Second {
		t.Errorf("a tenant after a 2s Run: mean %s", g.meanLocked(id, now))
	}
	for range 20 {
		g.warmLocked(id, time.Millisecond, now)
	}
	if _, ok := g.heat[id]; ok {
		t.Error("a tenant whose Runs have become short is still remembered")
	}
	if g.meanLocked(uuid.New(), now) != 0 {
		t.Error("an unknown tenant has heat")
	}
}

// A heavy tenant is capped only beside a tenant at most half as heavy: when
// a tenant's load makes everyone's Runs long, its victims, slowed too, are
// not capped along with it, and tenants alike share by the cap alone.
func TestGateCapsOnlyTheHeavier(t *testing.T) {
	t.Parallel()
	b := newBlocking()
	g := gate(b, 10, func(c *GateConfig) {
		c.MaxConcurrent, c.MaxQueued, c.HeavyCap, c.HeavyAfter = 4, 4, 1, 100*time.Millisecond
	})
	ctx := context.Background()
	attacker, victim, twin := tenant("attacker"), tenant("victim"), tenant("twin")
	g.mu.Lock()
	now := time.Now()
	g.warmLocked(attacker.ID, time.Second, now)
	g.warmLocked(twin.ID, time.Second, now)
	g.warmLocked(victim.ID, 300*time.Millisecond, now) // slowed, but less than half as long
	g.mu.Unlock()

	var done []<-chan error
	// Beside its twin, the attacker keeps its whole cap.
	done = append(done, run(ctx, g, twin))
	entered(t, b)
	for range 2 {
		done = append(done, run(ctx, g, attacker))
		entered(t, b)
	}
	// Beside the victim, the victim may run two at once; the attacker's
	// next Run waits.
	for range 2 {
		done = append(done, run(ctx, g, victim))
		entered(t, b)
	}
	done = append(done, run(ctx, g, attacker))
	waitQueued(t, g, 1)
	close(b.release)
	for _, d := range done {
		if err := result(t, d); err != nil {
			t.Fatal(err)
		}
	}
}
