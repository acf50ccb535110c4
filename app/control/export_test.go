package control

import (
	"context"
	"time"
)

// KeyFresh is keyFresh, for tests of the cache's bounds.
const KeyFresh = keyFresh

// SetKeyClock gives s's key cache a clock; call it before s authenticates.
func SetKeyClock(s *Service, now func() time.Time) { s.keys.now = now }

// SetKeyCacheSize replaces s's key cache with an empty one of size keys.
func SetKeyCacheSize(s *Service, size int) { s.keys = newKeyCache(size, s.keys.now) }

// PollKeys reads the authentication generation once, as WatchKeys does.
func PollKeys(ctx context.Context, s *Service) error { return s.pollKeys(ctx) }

// CachedKeys is how many keys s caches.
func CachedKeys(s *Service) int { return s.keys.len() }
