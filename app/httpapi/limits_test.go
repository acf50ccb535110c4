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
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

// bound is how long any wait of these tests may last before it fails.
const bound = 60 * time.Second

// rateLimitField matches the RateLimit field of draft-ietf-httpapi-ratelimit-headers.
var rateLimitField = regexp.MustCompile(`^"key";r=(\d+);t=(\d+)$`)

// Each key has a token bucket: its burst is served, the next request is
// 429 with Retry-After, and every answer says where the bucket stands in
// RateLimit and RateLimit-Policy. Another key of the same tenant has its
// own bucket; a tenant's override, set through the admin API, applies
// from the next request.
func TestRateLimitPerKey(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil,
		// One request an hour: the bucket cannot refill while the test runs.
		apitest.WithEnv("BULKHEAD_LIMITS__RATE__RATE", "0.0003"),
		apitest.WithEnv("BULKHEAD_LIMITS__RATE__BURST", "3"))
	a := env.Tenant(t, "acme")
	for i := range 3 {
		r := env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
		if got := r.Header.Get("RateLimit-Policy"); !strings.HasPrefix(got, `"key";q=3;w=`) {
			t.Errorf("RateLimit-Policy %q", got)
		}
		m := rateLimitField.FindStringSubmatch(r.Header.Get("RateLimit"))
		if m == nil || m[1] != fmt.Sprint(2-i) {
			t.Errorf("request %d: RateLimit %q, want r=%d", i, r.Header.Get("RateLimit"), 2-i)
		}
	}
	r := env.Must(t, 429, "GET", "/v1/accounts", a.Viewer, nil)
	if r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" ||
		!strings.HasPrefix(r.Header.Get("RateLimit"), `"key";r=0;`) {
		t.Errorf("over the limit: %s %v", r, r.Header)
	}
	env.Must(t, 200, "GET", "/v1/accounts", a.Editor, nil) // its own bucket
	env.Must(t, 429, "GET", "/v1/accounts", a.Viewer, nil)

	set := env.Must(t, 200, "PUT", "/admin/v1/tenants/acme/limits", apitest.AdminToken,
		map[string]any{"rate": 1000000, "burst": 1000000}).Map(t)
	if eff := set["effective"].(map[string]any); eff["burst"] != 1000000.0 || eff["max_concurrent"] != 8.0 {
		t.Errorf("limits after the override: %v", set)
	}
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	got := env.Must(t, 200, "GET", "/admin/v1/tenants/acme/limits", apitest.AdminToken, nil).Map(t)
	if o := got["overrides"].(map[string]any); o["rate"] != 1000000.0 || o["max_concurrent"] != nil {
		t.Errorf("overrides read back: %v", got)
	}
	// Back to the default: the key's bucket is the configured one again
	// (a new shape starts full).
	env.Must(t, 200, "PUT", "/admin/v1/tenants/acme/limits", apitest.AdminToken, map[string]any{})
	for range 3 {
		env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	}
	env.Must(t, 429, "GET", "/v1/accounts", a.Viewer, nil)

	env.Must(t, 422, "PUT", "/admin/v1/tenants/acme/limits", apitest.AdminToken, map[string]any{"max_concurrent": 0})
	env.Must(t, 422, "PUT", "/admin/v1/tenants/acme/limits", apitest.AdminToken, map[string]any{"rate": -1})
	env.Must(t, 400, "PUT", "/admin/v1/tenants/acme/limits", apitest.AdminToken, map[string]any{"rps": 5})
	env.Must(t, 404, "PUT", "/admin/v1/tenants/nobody/limits", apitest.AdminToken, map[string]any{})
	env.Must(t, 404, "GET", "/admin/v1/tenants/nobody/limits", apitest.AdminToken, nil)
	env.Must(t, 401, "GET", "/admin/v1/tenants/acme/limits", a.Editor, nil)

	var actions []string
	pool := pgtest.Pool(t, env.DB.AdminURL)
	rows, err := pool.Query(context.Background(), `SELECT action FROM bulkhead.audit_log WHERE action = 'tenant.limits'`)
	if err == nil {
		actions, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(actions) != 2 {
		t.Errorf("audit log: %d tenant.limits entries (%v), want 2", len(actions), err)
	}
}

// A client address that keeps failing to authenticate is refused 429
// with Retry-After before its keys are even looked up, and so is a bad
// admin token; the other counters are untouched.
func TestFailedAuthenticationsThrottled(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil,
		apitest.WithEnv("BULKHEAD_LIMITS__AUTH_FAILURES__RATE", "0.0003"),
		apitest.WithEnv("BULKHEAD_LIMITS__AUTH_FAILURES__BURST", "3"))
	bad := "bh_aaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52)
	for range 3 {
		env.Must(t, 401, "GET", "/v1/accounts", bad, nil)
	}
	r := env.Must(t, 429, "GET", "/v1/accounts", bad, nil)
	if r.Header.Get("Retry-After") == "" || !strings.HasPrefix(r.Header.Get("RateLimit-Policy"), `"auth";q=3;`) {
		t.Errorf("throttled: %s %v", r, r.Header)
	}
	env.Must(t, 429, "GET", "/admin/v1/tenants", "wrong-token-wrong-token-wrong-token", nil)
	// A request without credentials costs nothing to refuse: still 401.
	env.Must(t, 401, "GET", "/v1/accounts", "", nil)
}

// However many made-up methods clients send, the metrics keep one set of
// series for them all: the series count does not grow, and /metrics stays
// small.
func TestMetricLabelsStayBounded(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	u, _ := url.Parse(env.URL)
	send := func(method string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", u.Host, bound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(bound))
		fmt.Fprintf(c, "%s /v1/accounts HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, u.Host)
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatalf("%s: %v", method[:min(len(method), 16)], err)
		}
	}
	series := func() (int, int) {
		t.Helper()
		r := env.Must(t, 200, "GET", "/metrics", "", nil)
		n := 0
		for _, line := range strings.Split(string(r.Body), "\n") {
			if strings.HasPrefix(line, "bulkhead_http_") {
				n++
			}
		}
		return n, len(r.Body)
	}
	send("BREW") // the first unknown method makes the "other" series
	env.Must(t, 200, "GET", "/metrics", "", nil)
	before, size := series()
	for i := range 300 {
		send(fmt.Sprintf("X%d%s", i, strings.Repeat("Y", 2000)))
	}
	after, grown := series()
	if after != before {
		t.Errorf("%d metric series after 300 made-up methods, %d before", after, before)
	}
	if grown > size+4096 {
		t.Errorf("/metrics grew from %d to %d bytes", size, grown)
	}
	r := env.Must(t, 200, "GET", "/metrics", "", nil)
	if strings.Contains(string(r.Body), "YYYY") || !strings.Contains(string(r.Body), `method="other"`) {
		t.Error(`the made-up methods are not all counted as method="other"`)
	}
}

// Idle connections, however many, cannot keep a client out: at
// http.max_connections the longest idle keep-alive (or one that never sent
// a request) is closed to make room. Nor can headers over
// http.max_header_bytes get in.
func TestConnectionCapMakesRoom(t *testing.T) {
	t.Parallel()
	const cap = 8
	env := apitest.Start(t, nil,
		apitest.WithEnv("BULKHEAD_HTTP__MAX_CONNECTIONS", fmt.Sprint(cap)),
		apitest.WithEnv("BULKHEAD_HTTP__MAX_HEADER_BYTES", "4096"))
	a := env.Tenant(t, "acme")
	u, _ := url.Parse(env.URL)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 * cap {
		c, err := net.DialTimeout("tcp", u.Host, bound)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 0 { // a keep-alive that goes idle after one request
			c.SetDeadline(time.Now().Add(bound))
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		} // else: connected, never a byte sent
	}
	client := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		req, _ := http.NewRequest("GET", env.URL+"/v1/accounts", nil)
		req.Header.Set("Authorization", "Bearer "+a.Viewer)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("with %d idle connections open: %v", 3*cap, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("with %d idle connections open: %d", 3*cap, res.StatusCode)
		}
	}
	metrics := env.Must(t, 200, "GET", "/metrics", "", nil)
	m := regexp.MustCompile(`(?m)^bulkhead_http_connections_open (\d+)$`).FindSubmatch(metrics.Body)
	if m == nil {
		t.Fatal("no bulkhead_http_connections_open in /metrics")
	}
	if open, _ := strconv.Atoi(string(m[1])); open < 1 || open > cap {
		t.Errorf("bulkhead_http_connections_open %d, want 1 to %d", open, cap)
	}
	huge := strings.Repeat("x", 64<<10)
	r := env.Do(t, "GET", "/healthz", "", nil, "X-Padding", huge)
	if r.Status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers over http.max_header_bytes: %d", r.Status)
	}
}

// A keep-alive connection left idle between requests is closed by the
// server once http.idle_timeout has passed: idle clients do not keep their
// descriptors.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_HTTP__IDLE_TIMEOUT", "200ms"))
	u, _ := url.Parse(env.URL)
	c, err := net.DialTimeout("tcp", u.Host, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
	rd := bufio.NewReader(c)
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Close {
		t.Fatalf("a keep-alive request: %d, closed %v", res.StatusCode, res.Close)
	}
	// Nothing more is sent: the server ends the connection (EOF), long
	// before the test's own deadline would.
	if n, err := rd.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("an idle keep-alive connection: read %d bytes, %v; want the server to close it", n, err)
	}
}

// A body that stops arriving is answered 408 once http.read_timeout has
// passed: the connection is not held for ever.
func TestStalledBodyTimesOut(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_HTTP__READ_TIMEOUT", "300ms"))
	a := env.Tenant(t, "acme")
	u, _ := url.Parse(env.URL)
	c, err := net.DialTimeout("tcp", u.Host, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	fmt.Fprintf(c, "POST /v1/costs HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: text/csv\r\nContent-Length: 1000000\r\n\r\naccount_id,service,usage_date,amount,currency\n",
		u.Host, a.Editor)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "did not arrive") {
		t.Errorf("stalled body: %d %s", res.StatusCode, body)
	}
}

// A lock held past database.lock_timeout is answered 503 with
// Retry-After; a transaction left idle past
// database.idle_in_transaction_timeout has its session ended by
// PostgreSQL and is answered 504. Neither leaves a connection behind.
func TestLockAndIdleTimeouts(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil,
		apitest.WithEnv("BULKHEAD_DATABASE__LOCK_TIMEOUT", "2s"),
		apitest.WithEnv("BULKHEAD_DATABASE__IDLE_IN_TRANSACTION_TIMEOUT", "2s"),
		apitest.WithStrategyDecorator(func(inner isolation.Runner) isolation.Runner {
			return isolationtest.ForTenant(inner, "idle", stayIdle)
		}))
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	// Another session holds the account's row lock for the whole request.
	admin := pgtest.Pool(t, env.DB.AdminURL)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, acct); err != nil {
		t.Fatal(err)
	}
	r := env.Do(t, "PATCH", "/v1/accounts/"+acct, a.Editor, map[string]any{"name": "renamed"})
	if r.Status != 503 || r.Header.Get("Retry-After") == "" || strings.Contains(string(r.Body), "lock timeout") {
		t.Errorf("a lock held past lock_timeout: %s %v", r, r.Header)
	}
	tx.Rollback(ctx)
	env.Must(t, 200, "PATCH", "/v1/accounts/"+acct, a.Editor, map[string]any{"name": "renamed"})

	idle := env.Tenant(t, "idle")
	r = env.Do(t, "GET", "/v1/accounts", idle.Viewer, nil)
	if r.Status != 504 || r.Header.Get("Retry-After") == "" || strings.Contains(string(r.Body), "terminating") {
		t.Errorf("a transaction idle past idle_in_transaction_session_timeout: %s %v", r, r.Header)
	}
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
}

// stayIdle leaves a transaction idle, once its work is done, until PostgreSQL
// ends its session: it looks every 3s — longer than the test's
// idle_in_transaction timeout, since each look is a statement that would
// restart it — for at most bound.
func stayIdle(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	if err := fn(tx); err != nil {
		return err
	}
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
			return err // the session was ended under the transaction
		}
	}
	return fmt.Errorf("the idle transaction was never ended")
}

// 45 ingests with the Idempotency-Key of a long one still running are each
// answered at once — while the long one still runs, so none waited on its
// lock: 409, or 429 for those beyond the tenant's cap and queue — and
// another tenant is served meanwhile; the long one then completes, once.
func TestIdempotencyKeyInProgressAnswers409(t *testing.T) {
	t.Parallel()
	h := &holdIngest{entered: make(chan struct{}, 1), release: make(chan struct{})}
	env := apitest.Start(t, nil, apitest.WithStrategyDecorator(func(inner isolation.Runner) isolation.Runner {
		h.inner = inner
		return h
	}))
	a, b := env.Tenant(t, "noisy"), env.Tenant(t, "bystander")
	acct := newAccount(t, env, a.Editor, 1)
	body := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `1`, "USD"}})
	long := make(chan *apitest.Response, 1)
	go func() {
		long <- env.Do(t, "POST", "/v1/costs", a.Editor, body, "Idempotency-Key", "K")
	}()
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
	var wg sync.WaitGroup
	statuses := make([]int, 45)
	details := make([]string, 45)
	for i := range statuses {
		wg.Go(func() {
			r := env.Do(t, "POST", "/v1/costs", a.Editor, body, "Idempotency-Key", "K")
			statuses[i], details[i] = r.Status, string(r.Body)
		})
	}
	wg.Wait() // the long ingest is still held: nobody waited for it
	conflicts := 0
	for i, s := range statuses {
		switch {
		case s == 409 && strings.Contains(details[i], "in progress"):
			conflicts++
		case s == 429:
		default:
			t.Errorf("same-key ingest %d: %d %s", i, s, details[i])
		}
	}
	if conflicts == 0 {
		t.Error("no same-key ingest was answered 409")
	}
	env.Must(t, 200, "GET", "/v1/accounts", b.Viewer, nil)
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
	if n := len(allCosts(t, env, a.Viewer, "").Items); n != 1 {
		t.Errorf("%d items written, want 1", n)
	}
	r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, body, "Idempotency-Key", "K")
	if r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("after the long ingest, its key replays: %v", r.Header)
	}
}

// holdIngest holds the first transaction that writes cost items open, after
// its work, until release is closed.
type holdIngest struct {
	inner   isolation.Runner
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h *holdIngest) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	// It counts in a statement of its own after fn's.
	return h.inner.Run(isolation.NotOneRead(ctx), t, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM cost_items WHERE tenant_id = $1`, t.ID).Scan(&n); err != nil {
			return err
		}
		first := false
		if n > 0 {
			h.once.Do(func() { first = true })
		}
		if first {
			h.entered <- struct{}{}
			select {
			case <-h.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}, opts...)
}

// The admin API answers the top tenants by each measure, from what the
// servers recorded, and never more than asked; bad arguments are 422.
func TestTenantStats(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	busy, calm := env.Tenant(t, "busy"), env.Tenant(t, "calm")
	for range 5 {
		env.Must(t, 200, "GET", "/v1/accounts", busy.Viewer, nil)
	}
	env.Must(t, 200, "GET", "/v1/accounts", calm.Viewer, nil)
	var st struct {
		Minutes int
		By      string
		Items   []struct {
			Tenant     string  `json:"tenant"`
			Requests   int64   `json:"requests"`
			DBSeconds  float64 `json:"db_seconds"`
			Rejections int64   `json:"rejections"`
		}
	}
	env.Must(t, 200, "GET", "/admin/v1/tenants/stats?minutes=5", apitest.AdminToken, nil).JSON(t, &st)
	if len(st.Items) != 2 || st.Items[0].Tenant != "busy" || st.Items[0].Requests != 5 || st.Items[1].Tenant != "calm" ||
		st.Items[1].Requests != 1 || st.Items[0].DBSeconds <= 0 {
		t.Errorf("stats by requests: %+v", st)
	}
	env.Must(t, 200, "GET", "/admin/v1/tenants/stats?by=db_time&limit=1", apitest.AdminToken, nil).JSON(t, &st)
	if len(st.Items) != 1 || st.By != "db_time" {
		t.Errorf("stats by db_time, limit 1: %+v", st)
	}
	// Recorded again later: the counts add up, not replace.
	env.Must(t, 200, "GET", "/v1/accounts", busy.Viewer, nil)
	env.Must(t, 200, "GET", "/admin/v1/tenants/stats", apitest.AdminToken, nil).JSON(t, &st)
	if st.Items[0].Tenant != "busy" || st.Items[0].Requests != 6 {
		t.Errorf("after one more request: %+v", st)
	}
	env.Must(t, 422, "GET", "/admin/v1/tenants/stats?by=fame", apitest.AdminToken, nil)
	env.Must(t, 422, "GET", "/admin/v1/tenants/stats?minutes=100000", apitest.AdminToken, nil)
	env.Must(t, 422, "GET", "/admin/v1/tenants/stats?limit=101", apitest.AdminToken, nil)
	env.Must(t, 401, "GET", "/admin/v1/tenants/stats", busy.Editor, nil)
	if r := env.Do(t, "GET", "/metrics", "", nil); strings.Contains(string(r.Body), busy.ID.String()) || strings.Contains(string(r.Body), `"busy"`) {
		t.Error("/metrics names a tenant")
	}
}
