package limits

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Tarpit slows down clients that come straight back after being refused.
// A refusal is answered in microseconds, so a client that retries at once
// costs the server a core's worth of refusals; held for Delay, it costs a
// sleeping goroutine. Each client may be refused as its Policy allows and
// be answered at once; every further refusal is held for the delay, when
// one of the MaxHeld slots is free, and answered at once when none is. It
// is safe for concurrent use.
type Tarpit struct {
	delay time.Duration
	pol   Policy
	rates *Rates
	slots chan struct{}

	stop     chan struct{}
	stopOnce sync.Once
	total    atomic.Int64
}

// NewTarpit returns a tarpit holding refusals for delay, at most maxHeld
// at once (at least one), once a client's refusals exceed p; it tracks at
// most tracked clients. A delay of 0 or less, or an unlimited p, holds
// nothing.
func NewTarpit(delay time.Duration, maxHeld int, p Policy, tracked int) *Tarpit {
	return &Tarpit{
		delay: delay,
		pol:   p,
		rates: NewRates(tracked),
		slots: make(chan struct{}, max(maxHeld, 1)),
		stop:  make(chan struct{}),
	}
}

// Hold counts a refusal of client and, when the client has been refused
// more often than the policy allows and a slot is free, waits the delay
// before returning, or until ctx ends or Stop is called. It reports
// whether the refusal was held.
func (t *Tarpit) Hold(ctx context.Context, client string) bool {
	if t.delay <= 0 || t.stopped() || t.rates.Take(client, t.pol).Allowed {
		return false
	}
	select {
	case t.slots <- struct{}{}:
	default:
		return false // every slot is taken: answer at once
	}
	defer func() { <-t.slots }()
	t.total.Add(1)
	timer := time.NewTimer(t.delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-t.stop:
	}
	return true
}

func (t *Tarpit) stopped() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

// Stop ends every wait at once and holds nothing from then on, so that a
// server's graceful stop does not wait out the delays. It may be called
// more than once.
func (t *Tarpit) Stop() { t.stopOnce.Do(func() { close(t.stop) }) }

// Held returns how many refusals are being held now.
func (t *Tarpit) Held() int { return len(t.slots) }

// Total returns how many refusals have been held since the start.
func (t *Tarpit) Total() int64 { return t.total.Load() }
