package limits

import (
	"context"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/await"
)

// oncePerHour is a refusal policy whose bucket cannot refill while a test
// runs: its burst, then nothing.
var oncePerHour = Policy{Rate: 1.0 / 3600, Burst: 2}

// hold runs t.Hold in a goroutine and returns where its answer will be.
func hold(ctx context.Context, t *Tarpit, client string) <-chan bool {
	ch := make(chan bool, 1)
	go func() { ch <- t.Hold(ctx, client) }()
	return ch
}

// waitHeld waits until n refusals are held.
func waitHeld(tb testing.TB, t *Tarpit, n int) {
	tb.Helper()
	deadline := time.Now().Add(await.Deadline)
	for t.Held() != n {
		if time.Now().After(deadline) {
			tb.Fatalf("waited %s for %d held refusals; %d are", await.Deadline, n, t.Held())
		}
		time.Sleep(time.Millisecond)
	}
}

// A client's burst of refusals is answered at once; the next is held for
// the delay. Another client has a burst of its own.
func TestTarpitHoldsAfterTheBurst(t *testing.T) {
	t.Parallel()
	const delay = 50 * time.Millisecond
	tp := NewTarpit(delay, 10, oncePerHour, 100)
	ctx := context.Background()
	for i := range oncePerHour.Burst {
		if tp.Hold(ctx, "a") {
			t.Fatalf("refusal %d of the burst was held", i)
		}
	}
	start := time.Now()
	if !await.Recv(t, hold(ctx, tp, "a"), "a refusal beyond the burst") {
		t.Fatal("a refusal beyond the burst was answered at once")
	}
	if took := time.Since(start); took < delay {
		t.Errorf("held for %s, want at least %s", took, delay)
	}
	if tp.Hold(ctx, "b") {
		t.Error("another client's first refusal was held")
	}
	if tp.Total() != 1 || tp.Held() != 0 {
		t.Errorf("total %d, held now %d; want 1 and 0", tp.Total(), tp.Held())
	}
}

// A delay of 0, or no limit on refusals, holds nothing.
func TestTarpitOff(t *testing.T) {
	t.Parallel()
	for _, tp := range []*Tarpit{
		NewTarpit(0, 10, oncePerHour, 100),
		NewTarpit(time.Hour, 10, Policy{}, 100),
	} {
		for range 10 {
			if tp.Hold(context.Background(), "a") {
				t.Fatal("held a refusal")
			}
		}
	}
}

// With every slot taken, a refusal that would be held is answered at
// once; a held one ends with its request's context.
func TestTarpitSlotsAreBounded(t *testing.T) {
	t.Parallel()
	tp := NewTarpit(time.Hour, 1, Policy{Rate: 1.0 / 3600, Burst: 1}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tp.Hold(ctx, "a")
	tp.Hold(ctx, "b")
	first := hold(ctx, tp, "a")
	waitHeld(t, tp, 1)
	if await.Recv(t, hold(context.Background(), tp, "b"), "a refusal with no slot free") {
		t.Error("a refusal was held with no slot free")
	}
	cancel()
	if !await.Recv(t, first, "a held refusal whose request ended") {
		t.Error("the first refusal was not held")
	}
	waitHeld(t, tp, 0)
}

// Stop ends every wait at once, and nothing is held after it.
func TestTarpitStop(t *testing.T) {
	t.Parallel()
	tp := NewTarpit(time.Hour, 10, Policy{Rate: 1.0 / 3600, Burst: 1}, 100)
	ctx := context.Background()
	tp.Hold(ctx, "a")
	held := hold(ctx, tp, "a")
	waitHeld(t, tp, 1)
	tp.Stop()
	await.Recv(t, held, "a held refusal after Stop")
	if tp.Hold(ctx, "a") {
		t.Error("a refusal was held after Stop")
	}
	tp.Stop() // twice is fine
}
