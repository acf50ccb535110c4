package isolationtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

// bound is how long any wait of these tests may last before it fails.
const bound = 60 * time.Second

var strategies = []string{isolation.RLS, isolation.Schema, isolation.Database}

// holding holds every transaction of one tenant open, once its work is
// done, until let is called; entered receives each time one is held.
type holding struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHolding() *holding {
	return &holding{entered: make(chan struct{}, 10), release: make(chan struct{})}
}

// decorator holds the transactions of the tenant called slug.
func (h *holding) decorator(slug string) apitest.Option {
	return apitest.WithStrategyDecorator(func(inner isolation.Strategy) isolation.Strategy {
		return isolationtest.ForTenant(inner, slug, h.hold)
	})
}

func (h *holding) hold(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	if err := fn(tx); err != nil {
		return err
	}
	select {
	case h.entered <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// let ends the holding, once however often it is called.
func (h *holding) let() { h.once.Do(func() { close(h.release) }) }

// get sends GET path with key in the background; the answer arrives on
// the channel.
func get(env *apitest.Env, path, key string) <-chan *apitest.Response {
	out := make(chan *apitest.Response, 1)
	go func() {
		req, _ := http.NewRequest("GET", env.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := env.Client.Do(req)
		if err != nil {
			out <- &apitest.Response{Status: -1, Body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		out <- &apitest.Response{Status: res.StatusCode, Header: res.Header, Body: b}
	}()
	return out
}

func answer(t *testing.T, ch <-chan *apitest.Response, what string) *apitest.Response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(bound):
		t.Fatalf("%s: no answer", what)
	}
	return nil
}

func awaitEntered(t *testing.T, h *holding) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(bound):
		t.Fatal("the noisy tenant's transaction never started")
	}
}

// One tenant holding as many transactions as its cap lets it, with one
// more waiting, has its next request refused 429 with Retry-After at once,
// while another tenant is served; on the database strategy its pool never
// holds more connections than its cap. Every strategy.
func TestLoadWallFairShare(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			h := newHolding()
			env := apitest.Start(t, nil, apitest.WithStrategy(s),
				apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__PER_TENANT", "2"),
				apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_PER_TENANT", "1"),
				apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_TIMEOUT", "10m"),
				apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", "4"),
				apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS", "4"),
				h.decorator("noisy"))
			noisy, quiet := env.Tenant(t, "noisy"), env.Tenant(t, "quiet")
			defer h.let()
			held := []<-chan *apitest.Response{get(env, "/v1/accounts", noisy.Viewer), get(env, "/v1/accounts", noisy.Viewer)}
			awaitEntered(t, h)
			awaitEntered(t, h)
			queued := get(env, "/v1/accounts", noisy.Viewer)
			deadline := time.Now().Add(bound)
			for queuedRuns(env) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the third request never queued: %+v", env.Gate.Stats())
				}
				time.Sleep(5 * time.Millisecond)
			}
			r := env.Do(t, "GET", "/v1/accounts", noisy.Viewer, nil)
			if r.Status != 429 || r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("the noisy tenant over its cap and queue: %s %v", r, r.Header)
			}
			env.Must(t, 200, "GET", "/v1/accounts", quiet.Viewer, nil)
			if s == isolation.Database {
				admin := pgtest.Pool(t, env.DB.AdminURL)
				n := pgtest.Count(t, admin, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, database.DBName(noisy.ID))
				if n > 2 {
					t.Errorf("the noisy tenant's database has %d sessions, over its cap of 2", n)
				}
			}
			h.let()
			for i, ch := range append(held, queued) {
				if r := answer(t, ch, fmt.Sprint("noisy request ", i)); r.Status != 200 {
					t.Errorf("noisy request %d: %s", i, r)
				}
			}
		})
	}
}

// A tenant's concurrency override, set through the admin API, replaces
// limits.concurrency.per_tenant for that tenant at its next request: one
// running transaction fills a cap of 1 (the next request is refused 429 at
// once, while another tenant is served), and a cap raised to 2 admits a
// second. The Gate is the same in front of every strategy; rls shows it.
func TestLoadWallConcurrencyOverride(t *testing.T) {
	t.Parallel()
	h := newHolding()
	env := apitest.Start(t, nil, apitest.WithStrategy(isolation.RLS),
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__PER_TENANT", "4"),
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_PER_TENANT", "0"),
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_TIMEOUT", "10m"),
		apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", "9"),
		h.decorator("noisy"))
	noisy, quiet := env.Tenant(t, "noisy"), env.Tenant(t, "quiet")
	defer h.let()
	env.Must(t, 200, "PUT", "/admin/v1/tenants/noisy/limits", apitest.AdminToken, map[string]any{"max_concurrent": 1})
	held := []<-chan *apitest.Response{get(env, "/v1/accounts", noisy.Viewer)}
	awaitEntered(t, h)
	r := env.Do(t, "GET", "/v1/accounts", noisy.Viewer, nil)
	if r.Status != 429 || r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("the noisy tenant at its override of 1: %s %v", r, r.Header)
	}
	env.Must(t, 200, "GET", "/v1/accounts", quiet.Viewer, nil)

	env.Must(t, 200, "PUT", "/admin/v1/tenants/noisy/limits", apitest.AdminToken, map[string]any{"max_concurrent": 2})
	held = append(held, get(env, "/v1/accounts", noisy.Viewer))
	awaitEntered(t, h) // admitted beside the first
	if r := env.Do(t, "GET", "/v1/accounts", noisy.Viewer, nil); r.Status != 429 {
		t.Errorf("the noisy tenant at its override of 2: %s", r)
	}
	h.let()
	for i, ch := range held {
		if r := answer(t, ch, fmt.Sprint("noisy request ", i)); r.Status != 200 {
			t.Errorf("noisy request %d: %s", i, r)
		}
	}
}

func queuedRuns(env *apitest.Env) int {
	n := 0
	for _, st := range env.Gate.Stats() {
		n += st.Queued
	}
	return n
}

// A panic inside fn, more times than the pool and the connection budget
// hold connections, leaves every connection and every slot returned: the
// tenant is served after. Every strategy.
func TestLoadWallPanicsReturnWhatTheyHeld(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			const pool = 2
			env := apitest.Start(t, nil, apitest.WithStrategy(s),
				apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", fmt.Sprint(pool)),
				apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS", fmt.Sprint(pool)))
			tn := env.Tenant(t, "panicky")
			for i := range 3*pool + 1 {
				func() {
					defer func() {
						if recover() == nil {
							t.Fatalf("panic %d did not reach the caller", i)
						}
					}()
					_ = env.Gate.Run(context.Background(), tn.Isolated(), func(tx pgx.Tx) error {
						if _, err := tx.Exec(context.Background(), `SELECT 1`); err != nil {
							return err
						}
						panic(fmt.Sprint("panic ", i))
					})
				}()
			}
			for name, st := range env.Gate.Stats() {
				if st.Held != 0 {
					t.Errorf("pool %s: %d slots still held after the panics", name, st.Held)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			var one int
			if err := env.Gate.Run(ctx, tn.Isolated(), func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT 1`).Scan(&one)
			}); err != nil || one != 1 {
				t.Fatalf("after the panics: %v", err)
			}
			env.Must(t, 200, "GET", "/v1/accounts", tn.Viewer, nil)
			if s == isolation.Database {
				st, _ := env.Router.Strategy(isolation.Database)
				if stats := st.(*database.Strategy).Stats(); stats.Open > pool || stats.HighWater > pool {
					t.Errorf("budget after the panics: %+v", stats)
				}
			}
		})
	}
}

// The database bounds of a request are in force inside its transaction —
// and only there: the next transaction on the same connection has the
// server's settings again. Every strategy, directly and behind PgBouncer.
func TestLoadWallBoundsAreTransactionLocal(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		for _, bouncer := range []bool{false, true} {
			name := s
			if bouncer {
				name += "/pgbouncer"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				opts := []apitest.Option{apitest.WithStrategy(s),
					apitest.WithEnv("BULKHEAD_DATABASE__MAX_CONNECTIONS", "1"),
					apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__MAX_CONNECTIONS", "1"),
					apitest.WithEnv("BULKHEAD_DATABASE__STATEMENT_TIMEOUT", "7s"),
					apitest.WithEnv("BULKHEAD_DATABASE__LOCK_TIMEOUT", "3s"),
					apitest.WithEnv("BULKHEAD_DATABASE__IDLE_IN_TRANSACTION_TIMEOUT", "11s")}
				if bouncer {
					opts = append(opts, apitest.WithPgBouncer())
				}
				env := apitest.Start(t, nil, opts...)
				tn := env.Tenant(t, "bounded")
				ctx, cancel := context.WithTimeout(context.Background(), bound)
				defer cancel()
				show := func(run func(context.Context, isolation.Tenant, func(pgx.Tx) error) error) (got [3]string) {
					t.Helper()
					err := run(ctx, tn.Isolated(), func(tx pgx.Tx) error {
						return tx.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),
							current_setting('idle_in_transaction_session_timeout')`).Scan(&got[0], &got[1], &got[2])
					})
					if err != nil {
						t.Fatal(err)
					}
					return got
				}
				if got := show(env.Gate.Run); got != [3]string{"7s", "3s", "11s"} {
					t.Errorf("inside a request's transaction: %q, want the configured bounds", got)
				}
				if got := show(env.Strategy.Run); got != [3]string{"0", "0", "0"} {
					t.Errorf("the next transaction, without bounds: %q, want the server's (0)", got)
				}
			})
		}
	}
}

// A statement running past database.statement_timeout is stopped by
// PostgreSQL and answered 504 with Retry-After; nothing is left running,
// and the tenant is served after. Every strategy.
func TestLoadWallStatementTimeout(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			env := apitest.Start(t, nil, apitest.WithStrategy(s),
				apitest.WithEnv("BULKHEAD_DATABASE__STATEMENT_TIMEOUT", "2s"),
				apitest.WithStrategyDecorator(func(inner isolation.Strategy) isolation.Strategy {
					return isolationtest.ForTenant(inner, "slow", sleep)
				}))
			slow, other := env.Tenant(t, "slow"), env.Tenant(t, "other")
			r := env.Do(t, "GET", "/v1/accounts", slow.Viewer, nil)
			if r.Status != 504 || r.Header.Get("Retry-After") == "" || strings.Contains(string(r.Body), "cancel") {
				t.Errorf("a statement past statement_timeout: %s %v", r, r.Header)
			}
			env.Must(t, 200, "GET", "/v1/accounts", other.Viewer, nil)
		})
	}
}

// sleep runs pg_sleep(60) before a transaction's work.
func sleep(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	if _, err := tx.Exec(ctx, `SELECT pg_sleep(60)`); err != nil {
		return err
	}
	return fn(tx)
}
