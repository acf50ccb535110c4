package limits

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// clock is a manual clock for Rates.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newRatesAt(limit int) (*Rates, *clock) {
	c := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := NewRates(limit)
	r.now = c.now
	return r, c
}

// A bucket allows its burst at once, then one request per 1/rate; what it
// says of itself (remaining, reset, retry after) follows the tokens.
func TestRatesTokenBucket(t *testing.T) {
	t.Parallel()
	r, c := newRatesAt(10)
	p := Policy{Rate: 2, Burst: 3}
	for i := range 3 {
		d := r.Take("k", p)
		if !d.Allowed || d.Remaining != 2-i {
			t.Fatalf("request %d of the burst: %+v", i, d)
		}
	}
	d := r.Take("k", p)
	if d.Allowed || d.Remaining != 0 || d.RetryAfter != 500*time.Millisecond || d.Reset != 1500*time.Millisecond {
		t.Fatalf("over the burst: %+v, want refused, retry after 0.5s, full in 1.5s", d)
	}
	if d := r.Peek("k", p); d.Allowed {
		t.Fatalf("peek with the bucket empty: %+v", d)
	}
	c.t = c.t.Add(500 * time.Millisecond)
	if d := r.Peek("k", p); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("peek half a second later: %+v", d)
	}
	if d := r.Take("k", p); !d.Allowed {
		t.Fatalf("half a second later: %+v", d)
	}
	if d := r.Peek("never", p); !d.Allowed || d.Remaining != 3 || r.Len() != 1 {
		t.Fatalf("peek at a key never seen: %+v, %d buckets", d, r.Len())
	}
	if d := r.Take("other", p); !d.Allowed || d.Remaining != 2 {
		t.Fatalf("another key has its own bucket: %+v", d)
	}
	// A new shape (a tenant's override) starts a full bucket.
	if d := r.Take("k", Policy{Rate: 100, Burst: 100}); !d.Allowed || d.Remaining != 99 {
		t.Fatalf("after raising the limit: %+v", d)
	}
	if d := r.Take("k", Policy{}); !d.Allowed || r.Len() != 2 {
		t.Fatalf("no limit: %+v, %d buckets", d, r.Len())
	}
	if w := p.Window(); w != 2 {
		t.Errorf("window of 3 at 2/s: %d, want 2", w)
	}
}

// However many keys come, at most the limit of buckets is held; buckets
// that filled up again are dropped as they are met.
func TestRatesAreBounded(t *testing.T) {
	t.Parallel()
	r, c := newRatesAt(100)
	p := Policy{Rate: 1, Burst: 5}
	for i := range 10_000 {
		r.Take(fmt.Sprint("key-", i), p)
		if n := r.Len(); n > 100 {
			t.Fatalf("%d buckets after %d keys, over the limit of 100", n, i+1)
		}
	}
	// The least recently used went first: the newest keys are still
	// limited where they were.
	if d := r.Peek("key-9999", p); d.Remaining != 4 {
		t.Errorf("newest key: %+v", d)
	}
	c.t = c.t.Add(time.Minute) // every bucket full again
	for range 100 {
		r.Take("fresh", p)
		c.t = c.t.Add(time.Second)
	}
	if n := r.Len(); n > 5 {
		t.Errorf("%d buckets kept after they all filled up again, want them dropped", n)
	}
}

// Usage counts at most its limit of tenants one by one, the rest as
// Others; Top keeps the heaviest of each measure and adds up the rest.
func TestUsageIsBounded(t *testing.T) {
	t.Parallel()
	u := NewUsage(10)
	ids := make([]uuid.UUID, 50)
	for i := range ids {
		ids[i] = uuid.New()
		u.Add(ids[i], Counters{Requests: int64(i + 1)})
	}
	got := u.Take()
	if len(got) != 11 {
		t.Fatalf("%d tenants counted, want 10 and the others", len(got))
	}
	var sum int64
	for _, c := range got {
		sum += c.Requests
	}
	if sum != 50*51/2 {
		t.Errorf("requests %d, want every one counted (%d)", sum, 50*51/2)
	}
	if len(u.Take()) != 0 {
		t.Error("Take did not start afresh")
	}

	m := map[uuid.UUID]Counters{}
	for i, id := range ids {
		m[id] = Counters{Requests: int64(i), DBTime: time.Duration(50 - i), Waits: int64(i % 3), Rejections: 0}
	}
	top := Top(m, 2)
	for _, want := range []uuid.UUID{ids[49], ids[48], ids[0], ids[1]} {
		if _, ok := top[want]; !ok {
			t.Errorf("Top lost a tenant with the most of a measure")
		}
	}
	if len(top) > 4*2+1 {
		t.Errorf("Top kept %d tenants, want at most 9", len(top))
	}
	var all, kept int64
	for _, c := range m {
		all += c.Requests
	}
	for _, c := range top {
		kept += c.Requests
	}
	if all != kept {
		t.Errorf("Top lost requests: %d of %d", kept, all)
	}
}
