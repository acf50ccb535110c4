package control_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

// statements records every statement sent on the pools it traces.
type statements struct {
	mu  sync.Mutex
	sql []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sql = append(s.sql, strings.Join(strings.Fields(d.SQL), " "))
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// take returns the statements recorded since the last take.
func (s *statements) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sql
	s.sql = nil
	return out
}

// clock is a test's clock: it moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// cacheSetup is a control plane whose serving pool records what it sends
// and whose key cache runs on a clock the test moves, beside a second
// control plane (another server process, as far as the cache goes) on the
// same database that makes the changes.
type cacheSetup struct {
	svc, other *control.Service
	sent       *statements
	clock      *clock
	db         *pgtest.DB
	owner      *pgxpool.Pool
}

func setupCache(t *testing.T) cacheSetup {
	t.Helper()
	other, db, pools := setup(t)
	sent := &statements{}
	cfg, err := postgres.PoolConfig(db.AppURL, pgtest.Config(db).Database.Pooler, 2)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = sent
	app, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	traced := &postgres.Pools{App: app, Owner: pools.Owner}
	svc := control.New(traced, isolation.RegistryOf(rls.New(app, pools.Owner)), pgtest.Config(db), pgtest.Logger())
	c := &clock{now: time.Now()}
	control.SetKeyClock(svc, c.Now)
	return cacheSetup{svc: svc, other: other, sent: sent, clock: c, db: db, owner: pools.Owner}
}

// must returns v, failing the test it is given on err.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// authenticated fails t unless token authenticates on svc.
func authenticated(t *testing.T, svc *control.Service, token, when string) auth.Principal {
	t.Helper()
	p, err := svc.Authenticate(t.Context(), token)
	if err != nil {
		t.Fatalf("%s: authenticate: %v", when, err)
	}
	return p
}

// A key seen lately authenticates without a statement: for keyFresh after
// it was read, and for as long after as a poll of the generation confirms
// it, never longer.
func TestCachedKeyMakesNoQuery(t *testing.T) {
	t.Parallel()
	s := setupCache(t)
	ctx := t.Context()
	must(s.other.CreateTenant(ctx, "acme", ""))(t)
	k := must(s.other.CreateKey(ctx, "acme", auth.Viewer))(t)

	p := authenticated(t, s.svc, k.Key, "first use")
	if p.Tenant.Slug != "acme" || p.KeyID != k.ID || p.Role != auth.Viewer {
		t.Fatalf("principal %+v", p)
	}
	if got := s.sent.take(); len(got) == 0 {
		t.Fatal("the first use of a key sent no statement: where did it come from?")
	}
	for i := range 100 {
		authenticated(t, s.svc, k.Key, fmt.Sprintf("use %d", i))
	}
	// A wrong secret for a cached key is refused from the cache too.
	wrong := k.Key[:len(k.Key)-4] + "aaaa"
	if _, err := s.svc.Authenticate(ctx, wrong); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a wrong secret for a cached key: %v, want ErrUnauthenticated", err)
	}
	if got := s.sent.take(); len(got) != 0 {
		t.Fatalf("100 uses of a cached key sent %d statements: %q", len(got), got)
	}

	// Confirmed by a poll, the key outlives its own keyFresh…
	s.clock.Add(control.KeyFresh / 2)
	if err := control.PollKeys(ctx, s.svc); err != nil {
		t.Fatal(err)
	}
	s.sent.take()
	s.clock.Add(control.KeyFresh*3/4 - time.Nanosecond)
	authenticated(t, s.svc, k.Key, "confirmed by a poll")
	if got := s.sent.take(); len(got) != 0 {
		t.Fatalf("a key confirmed by the generation sent %q", got)
	}
	// …but no longer than keyFresh past that poll.
	s.clock.Add(control.KeyFresh/4 + time.Nanosecond)
	authenticated(t, s.svc, k.Key, "the confirmation a second old")
	if got := s.sent.take(); len(got) == 0 {
		t.Fatal("a key whose confirmation is keyFresh old was trusted without a statement")
	}
}

// What another process changes reaches this one's cache through the
// generation: at its next poll, and without a poll at most keyFresh after
// the key was read. What this process changes reaches it at once.
func TestKeyChangesReachTheCache(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		change func(t *testing.T, ctl *control.Service, k control.Key)
		want   error // nil: authenticates, with the new limits
	}{
		{"revoke", func(t *testing.T, ctl *control.Service, k control.Key) {
			if err := ctl.RevokeKey(t.Context(), k.ID); err != nil {
				t.Fatal(err)
			}
		}, auth.ErrUnauthenticated},
		{"rotate without grace", func(t *testing.T, ctl *control.Service, k control.Key) {
			if _, _, err := ctl.RotateKey(t.Context(), k.ID, 0, control.KeySpec{}); err != nil {
				t.Fatal(err)
			}
		}, auth.ErrUnauthenticated},
		{"suspend", func(t *testing.T, ctl *control.Service, k control.Key) {
			must(ctl.SetStatus(t.Context(), "acme", control.StatusSuspended))(t)
		}, auth.ErrSuspended},
		{"delete tenant", func(t *testing.T, ctl *control.Service, k control.Key) {
			must(ctl.DeleteTenant(t.Context(), "acme"))(t)
		}, auth.ErrUnauthenticated},
		{"limits", func(t *testing.T, ctl *control.Service, k control.Key) {
			must(ctl.SetTenantLimits(t.Context(), "acme", control.Limits{MaxConcurrent: new(3)}))(t)
		}, nil},
	} {
		check := func(t *testing.T, svc *control.Service, token, when string) {
			t.Helper()
			p, err := svc.Authenticate(t.Context(), token)
			switch {
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("%s: %s: %v, %+v; want %v", c.name, when, err, p, c.want)
			case c.want == nil && (err != nil || p.Limits.MaxConcurrent != 3):
				t.Fatalf("%s: %s: %v, limits %+v; want max_concurrent 3", c.name, when, err, p.Limits)
			}
		}
		t.Run(c.name+"/other process, at its poll", func(t *testing.T) {
			t.Parallel()
			s := setupCache(t)
			must(s.other.CreateTenant(t.Context(), "acme", ""))(t)
			k := must(s.other.CreateKey(t.Context(), "acme", auth.Editor))(t)
			if err := control.PollKeys(t.Context(), s.svc); err != nil {
				t.Fatal(err)
			}
			authenticated(t, s.svc, k.Key, "before the change")
			c.change(t, s.other, k)
			if err := control.PollKeys(t.Context(), s.svc); err != nil {
				t.Fatal(err)
			}
			check(t, s.svc, k.Key, "after the next poll")
		})
		t.Run(c.name+"/other process, no poll", func(t *testing.T) {
			t.Parallel()
			s := setupCache(t)
			must(s.other.CreateTenant(t.Context(), "acme", ""))(t)
			k := must(s.other.CreateKey(t.Context(), "acme", auth.Editor))(t)
			authenticated(t, s.svc, k.Key, "before the change")
			c.change(t, s.other, k)
			s.clock.Add(control.KeyFresh)
			check(t, s.svc, k.Key, "keyFresh after the key was read")
		})
		t.Run(c.name+"/this process", func(t *testing.T) {
			t.Parallel()
			s := setupCache(t)
			must(s.svc.CreateTenant(t.Context(), "acme", ""))(t)
			k := must(s.svc.CreateKey(t.Context(), "acme", auth.Editor))(t)
			if err := control.PollKeys(t.Context(), s.svc); err != nil {
				t.Fatal(err)
			}
			authenticated(t, s.svc, k.Key, "before the change")
			c.change(t, s.svc, k)
			check(t, s.svc, k.Key, "at once")
		})
	}
}

// A key's expiry holds to the instant, however recently the generation
// confirmed the key.
func TestCachedKeyExpires(t *testing.T) {
	t.Parallel()
	s := setupCache(t)
	control.SetKeyClock(s.svc, time.Now)
	ctx := t.Context()
	must(s.other.CreateTenant(ctx, "acme", ""))(t)
	at := time.Now().Add(1500 * time.Millisecond)
	k := must(s.other.CreateKeyWith(ctx, "acme", control.KeySpec{Role: auth.Viewer, ExpiresAt: &at}))(t)
	authenticated(t, s.svc, k.Key, "before it expires")
	time.Sleep(time.Until(at) + 10*time.Millisecond)
	if err := control.PollKeys(ctx, s.svc); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.Authenticate(ctx, k.Key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("an expired key: %v, want ErrUnauthenticated", err)
	}
}

// The cache holds at most its size, keeps only keys that authenticated, and
// a key it dropped still works (with a query).
func TestKeyCacheIsBounded(t *testing.T) {
	t.Parallel()
	s := setupCache(t)
	control.SetKeyCacheSize(s.svc, 3)
	ctx := t.Context()
	must(s.other.CreateTenant(ctx, "acme", ""))(t)
	must(s.other.CreateTenant(ctx, "globex", ""))(t)
	must(s.other.SetStatus(ctx, "globex", control.StatusSuspended))(t)
	suspended := must(s.other.CreateKey(ctx, "globex", auth.Viewer))(t)
	var keys []control.Key
	for range 5 {
		keys = append(keys, must(s.other.CreateKey(ctx, "acme", auth.Viewer))(t))
	}
	for round := range 2 {
		for i, k := range keys {
			authenticated(t, s.svc, k.Key, fmt.Sprintf("round %d, key %d", round, i))
			if n := control.CachedKeys(s.svc); n > 3 {
				t.Fatalf("the cache holds %d keys; its size is 3", n)
			}
		}
	}

	control.SetKeyCacheSize(s.svc, 3)
	for i := range 200 {
		// Unknown keys, wrong secrets of known ones, a suspended tenant's.
		bad := []string{auth.NewKey().Token, keys[i%5].Key[:len(keys[i%5].Key)-4] + "aaaa", suspended.Key}[i%3]
		if _, err := s.svc.Authenticate(ctx, bad); err == nil {
			t.Fatalf("a bad key authenticated: %s", bad)
		}
	}
	if n := control.CachedKeys(s.svc); n != 0 {
		t.Fatalf("refused keys left %d entries in the cache", n)
	}
}

// A cached key still records its use once a minute, and no more often.
func TestCachedKeyRecordsItsUse(t *testing.T) {
	t.Parallel()
	s := setupCache(t)
	ctx := t.Context()
	must(s.other.CreateTenant(ctx, "acme", ""))(t)
	k := must(s.other.CreateKey(ctx, "acme", auth.Viewer))(t)
	lastUsed := func() (at *time.Time) {
		t.Helper()
		if err := s.owner.QueryRow(ctx, `SELECT last_used_at FROM bulkhead.api_keys WHERE id = $1`, k.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	authenticated(t, s.svc, k.Key, "first use")
	if lastUsed() == nil {
		t.Fatal("the first use was not recorded")
	}
	s.db.Exec(t, `UPDATE bulkhead.api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1`, k.ID)
	before := lastUsed()
	s.clock.Add(time.Minute - time.Second)
	must(struct{}{}, control.PollKeys(ctx, s.svc))(t)
	authenticated(t, s.svc, k.Key, "within the minute")
	if got := lastUsed(); !got.Equal(*before) {
		t.Fatalf("last_used_at rewritten within a minute of the first use: %v, was %v", got, before)
	}
	s.clock.Add(time.Second)
	must(struct{}{}, control.PollKeys(ctx, s.svc))(t)
	s.sent.take()
	authenticated(t, s.svc, k.Key, "a minute after the first use")
	if got := lastUsed(); got.Equal(*before) {
		t.Fatalf("last_used_at not rewritten a minute after the first use: %v", got)
	}
	if got := s.sent.take(); len(got) != 1 || !strings.HasPrefix(got[0], "UPDATE bulkhead.api_keys SET last_used_at") {
		t.Fatalf("a cached key's use a minute on sent %q; want only the UPDATE of last_used_at", got)
	}
}
