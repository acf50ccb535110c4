package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// tarpitEnv is the environment of a test of the tarpit: a client may be
// refused burst times, answered at once, then every refusal is held for
// delay (the bucket cannot refill while the test runs).
func tarpitEnv(delay time.Duration, burst int) []apitest.Option {
	return []apitest.Option{
		apitest.WithEnv("BULKHEAD_LIMITS__TARPIT__DELAY", delay.String()),
		apitest.WithEnv("BULKHEAD_LIMITS__TARPIT__RATE", "0.0003"),
		apitest.WithEnv("BULKHEAD_LIMITS__TARPIT__BURST", strconv.Itoa(burst)),
	}
}

var (
	heldTotal   = regexp.MustCompile(`(?m)^bulkhead_http_refusals_held_total (\d+)$`)
	heldHolding = regexp.MustCompile(`(?m)^bulkhead_http_refusals_holding (\d+)$`)
)

// held returns the refusals the server has held in all, and holds now,
// as /metrics says.
func held(t *testing.T, env *apitest.Env) (total, now int) {
	t.Helper()
	body := env.Must(t, 200, "GET", "/metrics", "", nil).Body
	m, n := heldTotal.FindSubmatch(body), heldHolding.FindSubmatch(body)
	if m == nil || n == nil {
		t.Fatal("no bulkhead_http_refusals_held_total or bulkhead_http_refusals_holding in /metrics")
	}
	total, _ = strconv.Atoi(string(m[1]))
	now, _ = strconv.Atoi(string(n[1]))
	return total, now
}

// waitHolding waits until the server holds n refusals.
func waitHolding(t *testing.T, env *apitest.Env, n int) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		if _, now := held(t, env); now == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for the server to hold %d refusals", bound, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// timed is env.Must, with how long the answer took.
func timed(t *testing.T, env *apitest.Env, want int, method, path, key string) (*apitest.Response, time.Duration) {
	t.Helper()
	start := time.Now()
	r := env.Must(t, want, method, path, key, nil)
	return r, time.Since(start)
}

// madeUp sends a request with a made-up method and no key, on a
// connection of its own, and returns its status and how long it took.
func madeUp(t *testing.T, env *apitest.Env, i int) (int, time.Duration) {
	t.Helper()
	u, _ := url.Parse(env.URL)
	start := time.Now()
	c, err := net.DialTimeout("tcp", u.Host, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	fmt.Fprintf(c, "X%d%s /v1/accounts HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", i, strings.Repeat("M", 1000), u.Host)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("made-up method %d: %v", i, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, time.Since(start)
}

// A key that keeps coming back over its rate limit gets its refusals
// answered at once for the tarpit's burst, then each is held for the
// delay and answered as it would have been: the same 429, problem and
// headers. Another tenant's key, from the same address, is served
// meanwhile, and its own first refusals are not held: refusals are
// counted per key.
func TestTarpitHoldsAKeyThatKeepsComingBack(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	env := apitest.Start(t, nil, append(tarpitEnv(delay, 2),
		// One request an hour: the bucket cannot refill while the test runs.
		apitest.WithEnv("BULKHEAD_LIMITS__RATE__RATE", "0.0003"),
		apitest.WithEnv("BULKHEAD_LIMITS__RATE__BURST", "1"))...)
	a, b := env.Tenant(t, "noisy"), env.Tenant(t, "calm")
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	for range 2 {
		env.Must(t, 429, "GET", "/v1/accounts", a.Viewer, nil)
	}
	if total, _ := held(t, env); total != 0 {
		t.Fatalf("%d refusals held within the burst", total)
	}
	r, took := timed(t, env, 429, "GET", "/v1/accounts", a.Viewer)
	if took < delay {
		t.Errorf("the refusal after the burst took %s, want it held at least %s", took, delay)
	}
	if r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" ||
		!strings.HasPrefix(r.Header.Get("RateLimit"), `"key";r=0;`) || !strings.Contains(string(r.Body), "rate limit is spent") {
		t.Errorf("the held refusal is not the rate limit's answer: %s %v", r, r.Header)
	}

	again := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		res := env.Do(t, "GET", "/v1/accounts", a.Viewer, nil)
		if res.Status != 429 {
			t.Errorf("the key's next request: %s, want 429", res)
		}
		again <- time.Since(start)
	}()
	env.Must(t, 200, "GET", "/v1/accounts", b.Viewer, nil)
	env.Must(t, 429, "GET", "/v1/accounts", b.Viewer, nil) // within its own burst
	select {
	case took := <-again:
		if took < delay {
			t.Errorf("the key's next refusal took %s, want it held at least %s", took, delay)
		}
	case <-time.After(bound):
		t.Fatal("the key's next refusal was never answered")
	}
	if total, _ := held(t, env); total != 2 {
		t.Errorf("%d refusals held, want 2: the noisy key's two after its burst, none of the other key's", total)
	}
}

// A client without a key that floods made-up methods gets its 405s at
// once for the tarpit's burst, then each is held; so is any other refusal
// from its address, such as a 401. A key from the same address is served.
func TestTarpitHoldsAMadeUpMethodFlood(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	env := apitest.Start(t, nil, tarpitEnv(delay, 3)...)
	a := env.Tenant(t, "acme")
	for i := range 3 {
		if status, _ := madeUp(t, env, i); status != http.StatusMethodNotAllowed {
			t.Fatalf("made-up method %d: %d, want 405", i, status)
		}
	}
	if total, _ := held(t, env); total != 0 {
		t.Fatalf("%d refusals held within the burst", total)
	}
	status, took := madeUp(t, env, 3)
	if status != http.StatusMethodNotAllowed || took < delay {
		t.Errorf("the made-up method after the burst: %d in %s, want 405 held at least %s", status, took, delay)
	}
	r, took := timed(t, env, 401, "GET", "/v1/accounts", "")
	if took < delay || r.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("a 401 from the same address: in %s (want at least %s), %v", took, delay, r.Header)
	}
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	if total, _ := held(t, env); total != 2 {
		t.Errorf("%d refusals held, want 2", total)
	}
}

// At most limits.tarpit.max_held refusals are held at once: beyond, they
// are answered at once. A held refusal ends when its client goes away,
// and when the server stops, long before the delay.
func TestTarpitHoldsABoundedNumber(t *testing.T) {
	t.Parallel()
	const delay = 25 * time.Second // far longer than the test, shorter than http.write_timeout
	var srv *httpapi.Server
	env := apitest.Start(t, nil, append(tarpitEnv(delay, 1),
		apitest.WithEnv("BULKHEAD_LIMITS__TARPIT__MAX_HELD", "1"),
		apitest.WithFx(fx.Populate(&srv)))...)
	env.Must(t, 404, "GET", "/no/such/route", "", nil)

	type answer struct {
		status int
		took   time.Duration
		err    error
	}
	get := func(ctx context.Context) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+"/no/such/route", nil)
			res, err := (&http.Client{Timeout: bound}).Do(req)
			a := answer{err: err, took: time.Since(start)}
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				a.status = res.StatusCode
			}
			ch <- a
		}()
		return ch
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := get(ctx)
	waitHolding(t, env, 1)
	start := time.Now()
	_, took := timed(t, env, 404, "GET", "/no/such/route", "")
	if total, _ := held(t, env); total != 1 {
		t.Errorf("%d refusals held with max_held 1 (the second took %s)", total, took)
	}

	cancel() // the first client goes away
	if a := <-first; a.err == nil {
		t.Errorf("the first client was answered %d; it went away", a.status)
	}
	waitHolding(t, env, 0)
	if since := time.Since(start); since >= delay {
		t.Errorf("a held refusal whose client went away was held %s, the whole delay", since)
	}

	third := get(context.Background())
	waitHolding(t, env, 1)
	stopped := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		stopped <- srv.Stop(sctx)
	}()
	select {
	case a := <-third:
		if a.err != nil || a.status != 404 || a.took >= delay {
			t.Errorf("a held refusal while the server stops: %d in %s (%v), want 404 before the delay", a.status, a.took, a.err)
		}
	case <-time.After(bound):
		t.Fatal("a held refusal was not answered when the server stopped")
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	case <-time.After(bound):
		t.Fatal("the server did not stop")
	}
}

// A 409 for an idempotency key in use, and an authenticated request's
// 404, are the client's business, not refusals: never held, however many.
func TestTarpitNeverHoldsConflicts(t *testing.T) {
	t.Parallel()
	h := &holdIngest{entered: make(chan struct{}, 1), release: make(chan struct{})}
	env := apitest.Start(t, nil, append(tarpitEnv(time.Second, 1), apitest.WithStrategyDecorator(func(inner isolation.Runner) isolation.Runner {
		h.inner = inner
		return h
	}))...)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	body := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `1`, "USD"}})
	long := make(chan *apitest.Response, 1)
	go func() { long <- env.Do(t, "POST", "/v1/costs", a.Editor, body, "Idempotency-Key", "K") }()
	select {
	case <-h.entered:
	case <-time.After(bound):
		t.Fatal("the long ingest never started")
	}
	released := false
	defer func() {
		if !released {
			close(h.release)
		}
	}()
	for range 4 {
		r := env.Must(t, 409, "POST", "/v1/costs", a.Editor, body, "Idempotency-Key", "K")
		if !strings.Contains(string(r.Body), "in progress") {
			t.Errorf("same-key ingest: %s", r)
		}
		env.Must(t, 404, "GET", "/v1/accounts/00000000-0000-0000-0000-000000000001", a.Viewer, nil)
	}
	if total, _ := held(t, env); total != 0 {
		t.Errorf("%d answers held; 409s and an authenticated client's 404s are not refusals", total)
	}
	close(h.release)
	released = true
	select {
	case r := <-long:
		if r.Status != 201 {
			t.Errorf("the long ingest: %s", r)
		}
	case <-time.After(bound):
		t.Fatal("the long ingest never ended")
	}
}
