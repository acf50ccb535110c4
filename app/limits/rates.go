package limits

import (
	"container/list"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Policy is a token bucket: Rate requests per second on average, Burst at
// once. A Rate of 0 or less is no limit.
type Policy struct {
	Rate  float64
	Burst int
}

// Unlimited reports whether p limits nothing.
func (p Policy) Unlimited() bool { return p.Rate <= 0 }

// Window is the time an empty bucket of p takes to fill up again, in whole
// seconds, at least one: the window of its quota of Burst requests.
func (p Policy) Window() int {
	if p.Unlimited() {
		return 0
	}
	return max(int(math.Ceil(float64(max(p.Burst, 1))/p.Rate)), 1)
}

// Decision is the answer of Rates for one request.
type Decision struct {
	// Allowed is set when the request may go on.
	Allowed bool
	// Remaining is how many more requests the bucket would allow now.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until one request would be allowed; 0 when
	// Allowed.
	RetryAfter time.Duration
}

// Rates holds a token bucket per key (an API key's id, a client's
// address), at most Max of them. A bucket that has filled up again is the
// same as a new one, so buckets unused that long are dropped as they are
// found (the least recently used are looked at on every call); when Max
// buckets are in use, the least recently used is dropped, which can only
// forgive a client that spreads its requests over more than Max keys. It
// is safe for concurrent use.
type Rates struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // most recently used at the front
}

type bucket struct {
	key string
	lim *rate.Limiter
}

// NewRates returns an empty set of at most limit buckets (at least one).
func NewRates(limit int) *Rates {
	return &Rates{max: max(limit, 1), now: time.Now, buckets: map[string]*list.Element{}}
}

// Take spends one request of key's bucket under p, if it has one, and
// says what is left. A bucket of another shape than p (a tenant's override
// changed) is replaced by a full one of p's.
func (r *Rates) Take(key string, p Policy) Decision { return r.decide(key, p, 1) }

// Peek says what key's bucket under p would answer, spending nothing.
func (r *Rates) Peek(key string, p Policy) Decision { return r.decide(key, p, 0) }

func (r *Rates) decide(key string, p Policy, n int) Decision {
	if p.Unlimited() {
		return Decision{Allowed: true}
	}
	burst := max(p.Burst, 1)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	var b *bucket
	if e, ok := r.buckets[key]; ok {
		r.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		if b.lim.Limit() != rate.Limit(p.Rate) || b.lim.Burst() != burst {
			// A new shape (a tenant's override changed) starts a full
			// bucket: raising a limit helps at once.
			b.lim = rate.NewLimiter(rate.Limit(p.Rate), burst)
		}
	} else if n == 0 {
		// No bucket is a full one: a Peek makes none, so that clients
		// that never spend take no room.
		return Decision{Allowed: true, Remaining: burst}
	} else {
		b = &bucket{key: key, lim: rate.NewLimiter(rate.Limit(p.Rate), burst)}
		r.buckets[key] = r.lru.PushFront(b)
		for len(r.buckets) > r.max {
			r.dropLocked(r.lru.Back())
		}
	}
	tokens := b.lim.TokensAt(now)
	d := Decision{Allowed: tokens >= 1}
	if n > 0 && d.Allowed {
		b.lim.AllowN(now, n)
		tokens--
	}
	d.Remaining = max(int(math.Floor(tokens)), 0)
	d.Reset = secondsOf((float64(burst) - tokens) / p.Rate)
	if !d.Allowed {
		d.RetryAfter = secondsOf((1 - tokens) / p.Rate)
	}
	return d
}

func secondsOf(s float64) time.Duration {
	if s <= 0 {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

// sweepLocked drops, from the least recently used end, buckets that have
// filled up again: forgetting them changes nothing.
func (r *Rates) sweepLocked(now time.Time) {
	for range 2 {
		e := r.lru.Back()
		if e == nil {
			return
		}
		b := e.Value.(*bucket)
		if b.lim.TokensAt(now) < float64(b.lim.Burst()) {
			return
		}
		r.dropLocked(e)
	}
}

func (r *Rates) dropLocked(e *list.Element) {
	delete(r.buckets, r.lru.Remove(e).(*bucket).key)
}

// Len returns the number of buckets held.
func (r *Rates) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}
