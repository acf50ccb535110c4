package limits

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Others is the tenant id under which Usage adds up the tenants it does
// not track one by one.
var Others = uuid.Nil

// Counters are one tenant's use of the server over a period.
type Counters struct {
	// Requests is the tenant's authenticated HTTP requests.
	Requests int64
	// Rejections is its requests and transactions refused for a limit: a
	// rate limit, its concurrency cap or a full queue.
	Rejections int64
	// Waits is its transactions that had to wait for a slot, and WaitTime
	// how long they waited in all.
	Waits    int64
	WaitTime time.Duration
	// DBTime is the time its transactions held a connection slot.
	DBTime time.Duration
}

func (c *Counters) add(o Counters) {
	c.Requests += o.Requests
	c.Rejections += o.Rejections
	c.Waits += o.Waits
	c.WaitTime += o.WaitTime
	c.DBTime += o.DBTime
}

// Usage counts each tenant's use of this process between flushes, for
// `bulkhead tenant stats`: in memory, for at most a fixed number of
// tenants at once; the use of further tenants is added up under Others
// until the next flush. No Prometheus series is made per tenant. It is
// safe for concurrent use.
type Usage struct {
	max int

	mu  sync.Mutex
	cur map[uuid.UUID]*Counters
}

// NewUsage returns counters for at most maxTenants tenants between
// flushes (at least one).
func NewUsage(maxTenants int) *Usage {
	return &Usage{max: max(maxTenants, 1), cur: map[uuid.UUID]*Counters{}}
}

// Add adds c to tenant id's counters.
func (u *Usage) Add(id uuid.UUID, c Counters) {
	u.mu.Lock()
	defer u.mu.Unlock()
	cs := u.cur[id]
	if cs == nil {
		if len(u.cur) >= u.max {
			id = Others
			cs = u.cur[id]
		}
		if cs == nil {
			cs = &Counters{}
			u.cur[id] = cs
		}
	}
	cs.add(c)
}

// Observe adds what the Gate saw of a Run: a func for GateConfig.Observe.
func (u *Usage) Observe(id uuid.UUID, o Outcome) {
	c := Counters{DBTime: o.Held, WaitTime: o.Waited}
	if o.Waited > 0 {
		c.Waits = 1
	}
	if o.Rejected {
		c.Rejections = 1
	}
	u.Add(id, c)
}

// Take returns the counters gathered since the last Take and starts
// afresh.
func (u *Usage) Take() map[uuid.UUID]Counters {
	u.mu.Lock()
	cur := u.cur
	u.cur = map[uuid.UUID]*Counters{}
	u.mu.Unlock()
	out := make(map[uuid.UUID]Counters, len(cur))
	for id, c := range cur {
		out[id] = *c
	}
	return out
}

// Top keeps, of m, the n tenants with the most of each measure (requests,
// database time, waits, rejections: at most 4n tenants) and adds up the
// others under Others, so that what is persisted per period is bounded
// whatever the number of tenants.
func Top(m map[uuid.UUID]Counters, n int) map[uuid.UUID]Counters {
	if len(m) <= n {
		return m
	}
	ids := make([]uuid.UUID, 0, len(m))
	for id := range m {
		if id != Others {
			ids = append(ids, id)
		}
	}
	keep := map[uuid.UUID]bool{}
	for _, measure := range []func(Counters) int64{
		func(c Counters) int64 { return c.Requests },
		func(c Counters) int64 { return int64(c.DBTime) },
		func(c Counters) int64 { return c.Waits },
		func(c Counters) int64 { return c.Rejections },
	} {
		slices.SortFunc(ids, func(a, b uuid.UUID) int {
			return cmp.Or(cmp.Compare(measure(m[b]), measure(m[a])), slices.Compare(a[:], b[:]))
		})
		for _, id := range ids[:min(n, len(ids))] {
			if measure(m[id]) > 0 {
				keep[id] = true
			}
		}
	}
	out := make(map[uuid.UUID]Counters, len(keep)+1)
	var others Counters
	for id, c := range m {
		if keep[id] {
			out[id] = c
		} else {
			others.add(c)
		}
	}
	if others != (Counters{}) {
		out[Others] = others
	}
	return out
}

// Sink persists a period's usage: the control plane, per minute and per
// process, with a retention.
type Sink interface {
	RecordUsage(ctx context.Context, minute time.Time, usage map[uuid.UUID]Counters) error
}

// Recorder flushes a Usage to a Sink every interval, keeping the Top
// tenants of each flush.
type Recorder struct {
	usage *Usage
	sink  Sink
	top   int
	log   *slog.Logger
	now   func() time.Time

	flushMu sync.Mutex // one flush at a time: their order is their minutes'
}

// NewRecorder returns a Recorder of usage into sink, keeping top tenants
// per measure and flush.
func NewRecorder(usage *Usage, sink Sink, top int, log *slog.Logger) *Recorder {
	return &Recorder{usage: usage, sink: sink, top: max(top, 1), log: log, now: time.Now}
}

// Flush persists what usage gathered since the last flush, under the
// current minute. What the sink refuses is added back, to be tried again
// with the next flush (bounded, as Usage is).
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	got := r.usage.Take()
	if len(got) == 0 {
		return nil
	}
	kept := Top(got, r.top)
	if err := r.sink.RecordUsage(ctx, r.now().UTC().Truncate(time.Minute), kept); err != nil {
		for id, c := range kept {
			r.usage.Add(id, c)
		}
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, then once more within
// final's time.
func (r *Recorder) Run(ctx context.Context, every, final time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			fctx, cancel := context.WithTimeout(ctx, every)
			if err := r.Flush(fctx); err != nil && ctx.Err() == nil {
				r.log.Warn("record tenant usage", "err", err)
			}
			cancel()
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), final)
			if err := r.Flush(fctx); err != nil {
				r.log.Warn("record tenant usage", "err", err)
			}
			cancel()
			return
		}
	}
}
