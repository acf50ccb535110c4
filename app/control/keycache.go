package control

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/store"
)

const (
	// keyFresh is how long a key read from the control plane may be
	// trusted without the generation confirming it, and how old the
	// confirmation may be: the bound on how late a revocation (or a
	// suspension, a deletion, a rotation's end) reaches a server.
	keyFresh = time.Second
	// keyPollEvery is how often a serving process reads the generation:
	// twice per keyFresh, so that a slow poll still confirms in time.
	keyPollEvery = keyFresh / 2
	// keyCacheSize caps the keys one process keeps: beyond it the least
	// recently used goes, and costs a query again when it comes back.
	keyCacheSize = 10_000
)

// cachedKey is an authenticated key as read from the control plane. Only
// keys that authenticated, of an active tenant, are kept: an unknown key, a
// wrong secret or a suspended tenant is never cached, so a flood of them
// cannot grow the cache (the failed-authentication budget bounds them).
type cachedKey struct {
	p    auth.Principal
	hash []byte
	// gen is the authentication generation read in the same snapshot as
	// the key; read is when that query was sent.
	gen  int64
	read time.Time
	// expires is when the key stops working by its expires_at, measured
	// on this process's clock from the database's own remaining time (no
	// clock skew); zero when it does not expire.
	expires time.Time
	// touchDue is when last_used_at is to be recorded again, as Unix
	// nanoseconds: concurrent hits race for it with a compare-and-swap.
	touchDue atomic.Int64
}

// keyCache holds recently authenticated keys by public id. It is safe for
// concurrent use.
type keyCache struct {
	now func() time.Time

	mu  sync.Mutex
	lru *simplelru.LRU[string, *cachedKey]
	// gen is the last generation polled; confirmed is when that poll was
	// sent (zero: no confirmation).
	gen       int64
	confirmed time.Time
	// epoch counts invalidations, so that a read that started before one
	// cannot cache what it read after it.
	epoch uint64
}

func newKeyCache(size int, now func() time.Time) *keyCache {
	lru, err := simplelru.NewLRU[string, *cachedKey](size, nil)
	if err != nil {
		panic(err) // size is a positive constant
	}
	return &keyCache{now: now, lru: lru}
}

// get returns the cached key id while it may still be trusted: unexpired,
// and either read less than keyFresh ago or of the generation a poll sent
// less than keyFresh ago confirmed.
func (c *keyCache) get(id string) (*cachedKey, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.lru.Get(id)
	if !ok {
		return nil, false
	}
	fresh := now.Sub(k.read) < keyFresh ||
		(k.gen == c.gen && !c.confirmed.IsZero() && now.Sub(c.confirmed) < keyFresh)
	if !fresh || (!k.expires.IsZero() && !now.Before(k.expires)) {
		c.lru.Remove(id)
		return nil, false
	}
	return k, true
}

// begin returns what put needs to know of the cache before a read.
func (c *keyCache) begin() (epoch uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.now()
}

// put caches k unless the cache was invalidated since begin returned epoch.
func (c *keyCache) put(id string, k *cachedKey, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch == c.epoch {
		c.lru.Add(id, k)
	}
}

// confirm records that a poll sent at sent read generation gen. A new
// generation drops the keys read before it: get would no longer trust
// them past their own keyFresh anyway.
func (c *keyCache) confirm(gen int64, sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		for _, id := range c.lru.Keys() {
			if k, ok := c.lru.Peek(id); ok && k.gen < gen {
				c.lru.Remove(id)
			}
		}
		c.gen = gen
	}
	if sent.After(c.confirmed) {
		c.confirmed = sent
	}
}

// unconfirm forgets the last confirmation: a failed poll leaves each key
// only its own keyFresh.
func (c *keyCache) unconfirm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.confirmed = time.Time{}
}

// invalidate empties the cache at once: this process changed what decides
// a key, and its own next request must see it.
func (c *keyCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Purge()
	c.epoch++
	c.confirmed = time.Time{}
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// WatchKeys reads the authentication generation every half second until
// ctx ends, so that the keys this process caches stay trusted while nothing
// changed and are dropped within a second of a change made anywhere (see
// Authenticate). Without it a cached key is trusted for a second after it
// was read, then read again. It returns when ctx ends; serve runs it.
func (s *Service) WatchKeys(ctx context.Context) {
	t := time.NewTicker(keyPollEvery)
	defer t.Stop()
	failing := false
	for {
		if err := s.pollKeys(ctx); err != nil {
			s.keys.unconfirm()
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("read the authentication generation; keys are read again each second until it works", "err", err)
			}
			failing = true
		} else {
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollKeys reads the authentication generation once.
func (s *Service) pollKeys(ctx context.Context) error {
	if s.app == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, keyFresh)
	defer cancel()
	sent := s.keys.now()
	var gen int64
	if err := s.app.QueryRow(ctx, `SELECT gen FROM bulkhead.auth_generation`).Scan(&gen); err != nil {
		return store.Translate(err)
	}
	s.keys.confirm(gen, sent)
	return nil
}
