package isolationtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// LoadOptions size RunLoad.
type LoadOptions struct {
	// Tenants is how many tenants share the server (at least 2).
	Tenants int
	// Workers is how many concurrent clients each tenant has.
	Workers int
	// Rounds is how many rounds of requests each worker sends; a round
	// writes an account and a cost item and reads back lists, a summary
	// and, through Strategy.Run, the raw tables.
	Rounds int
}

// LoadResult is what RunLoad measured.
type LoadResult struct {
	Requests int64
	Elapsed  time.Duration
	// Backends is how many server sessions (pg_backend_pid) served the raw
	// reads, and Shared how many of them served more than one tenant.
	Backends, Shared int
}

// RunLoad serves strategy (opts adjust the server, as for apitest.Start)
// and drives a concurrent mixed-tenant load through the API: every worker
// of every tenant writes and reads at once, over shared server sessions.
// It fails t on any error answer (back-pressure — a 503 with Retry-After
// — is retried for a bounded time, as a client would), on any read that
// shows another tenant's row, and on any acknowledged write missing, or
// unacknowledged write present, at the end. It returns what it
// measured; timing is reported, never asserted.
func RunLoad(t *testing.T, strategy string, lo LoadOptions, opts ...apitest.Option) LoadResult {
	t.Helper()
	if lo.Tenants < 2 || lo.Workers < 1 || lo.Rounds < 1 {
		t.Fatalf("isolationtest: RunLoad needs at least 2 tenants, 1 worker and 1 round: %+v", lo)
	}
	// The load asserts answers, not speed: a busy machine may take seconds
	// to start a backend or to free a slot, so the waits for a connection
	// (the database strategy's) and for a slot of the admission gate are
	// long here, and still bounded. opts may say otherwise.
	env := apitest.Start(t, nil, append([]apitest.Option{
		apitest.WithStrategy(strategy),
		apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__ACQUIRE_TIMEOUT", "30s"),
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_TIMEOUT", "30s"),
	}, opts...)...)
	tenants := make([]apitest.Tenant, lo.Tenants)
	for i := range tenants {
		tenants[i] = env.Tenant(t, fmt.Sprintf("load-%d", i))
	}
	l := &load{env: env, client: &http.Client{
		Timeout:   time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: lo.Tenants * lo.Workers},
	}, pids: map[uint32]map[uuid.UUID]bool{}}
	defer l.client.CloseIdleConnections()
	acked := make([]struct {
		sync.Mutex
		accounts []string
		costs    int
	}, lo.Tenants)
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default: // enough to go on
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for ti, tn := range tenants {
		for w := range lo.Workers {
			wg.Go(func() {
				for r := range lo.Rounds {
					acct, err := l.round(tn, fmt.Sprintf("w%d-r%d", w, r))
					if err != nil {
						report(fmt.Errorf("%s worker %d round %d: %w", tn.Slug, w, r, err))
						return
					}
					acked[ti].Lock()
					acked[ti].accounts = append(acked[ti].accounts, acct)
					acked[ti].costs++
					acked[ti].Unlock()
				}
			})
		}
	}
	wg.Wait()
	res := LoadResult{Requests: l.requests.Load(), Elapsed: time.Since(start)}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every acknowledged write is there, and nothing else.
	for ti, tn := range tenants {
		var accounts []string
		var page struct {
			Items []struct {
				ID, Name string
			}
		}
		if err := l.getJSON(tn, "/v1/accounts?limit=1000", &page); err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Items {
			accounts = append(accounts, a.ID)
		}
		slices.Sort(accounts)
		want := slices.Sorted(slices.Values(acked[ti].accounts))
		if !slices.Equal(accounts, want) {
			t.Errorf("%s holds accounts %d, acknowledged %d (lost or foreign: %v)", tn.Slug, len(accounts), len(want), symmetricDiff(accounts, want))
		}
		var costs struct {
			Items []costItem
		}
		if err := l.getJSON(tn, "/v1/costs?limit=1000", &costs); err != nil {
			t.Fatal(err)
		}
		if len(costs.Items) != acked[ti].costs {
			t.Errorf("%s holds %d cost items, acknowledged %d", tn.Slug, len(costs.Items), acked[ti].costs)
		}
	}
	for _, tenants := range l.pids {
		res.Backends++
		if len(tenants) > 1 {
			res.Shared++
		}
	}
	t.Logf("%s load: %d tenants × %d workers × %d rounds: %d requests in %s (%.0f/s), %d attempts answered with back-pressure and retried; raw reads on %d server sessions, %d of them serving several tenants",
		strategy, lo.Tenants, lo.Workers, lo.Rounds, res.Requests, res.Elapsed.Round(time.Millisecond),
		float64(res.Requests)/res.Elapsed.Seconds(), l.retries.Load(), res.Backends, res.Shared)
	return res
}

type load struct {
	env      *apitest.Env
	client   *http.Client
	requests atomic.Int64
	retries  atomic.Int64 // attempts answered with back-pressure
	mu       sync.Mutex
	pids     map[uint32]map[uuid.UUID]bool // server session -> tenants it served
}

// round writes an account and a cost item on it for tn, then reads back
// what tn sees, and returns the account's id once both writes are
// acknowledged.
func (l *load) round(tn apitest.Tenant, tag string) (string, error) {
	var acct struct{ ID string }
	if err := l.call(tn, "POST", "/v1/accounts", map[string]any{"provider": "gcp", "external_id": tag, "name": tn.Slug}, 201, &acct); err != nil {
		return "", err
	}
	cost := []map[string]any{{"account_id": acct.ID, "service": tn.Slug + "-" + tag, "usage_date": day1, "amount": "1", "currency": "EUR"}}
	if err := l.call(tn, "POST", "/v1/costs", cost, 201, nil); err != nil {
		return "", err
	}
	var accounts struct{ Items []struct{ Name string } }
	if err := l.getJSON(tn, "/v1/accounts?limit=1000", &accounts); err != nil {
		return "", err
	}
	for _, a := range accounts.Items {
		if a.Name != tn.Slug {
			return "", fmt.Errorf("LEAK: %s's account list holds an account named %q", tn.Slug, a.Name)
		}
	}
	var sum struct{ Items []struct{ Key string } }
	if err := l.getJSON(tn, "/v1/costs/summary?group_by=service&from=2000-01-01&to=2100-01-01", &sum); err != nil {
		return "", err
	}
	for _, it := range sum.Items {
		if !strings.HasPrefix(it.Key, tn.Slug+"-") {
			return "", fmt.Errorf("LEAK: %s's summary holds service %q", tn.Slug, it.Key)
		}
	}
	// Raw, without a tenant predicate, on whatever server session the
	// strategy's pool hands out.
	ctx := context.Background()
	deadline := time.Now().Add(backPressure)
	for {
		err := l.raw(ctx, tn)
		if errors.Is(err, isolation.ErrUnavailable) && time.Now().Before(deadline) {
			l.retries.Add(1)
			time.Sleep(retryPause)
			continue
		}
		return acct.ID, err
	}
}

// raw reads tn's accounts without a tenant predicate, through
// Strategy.Run, and records which server session served it.
func (l *load) raw(ctx context.Context, tn apitest.Tenant) error {
	return l.env.Strategy.Run(ctx, tn.Isolated(), func(tx pgx.Tx) error {
		var pid uint32
		var foreign int
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid(), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM accounts`, tn.ID).Scan(&pid, &foreign); err != nil {
			return err
		}
		if foreign != 0 {
			return fmt.Errorf("LEAK: %s's transaction sees %d rows of other tenants", tn.Slug, foreign)
		}
		l.mu.Lock()
		if l.pids[pid] == nil {
			l.pids[pid] = map[uuid.UUID]bool{}
		}
		l.pids[pid][tn.ID] = true
		l.mu.Unlock()
		return nil
	})
}

func (l *load) getJSON(tn apitest.Tenant, path string, v any) error {
	return l.call(tn, "GET", path, nil, 200, v)
}

// backPressure bounds how long one step of a round is retried while the
// server answers it with back-pressure (a 503 with Retry-After, or
// ErrUnavailable from Strategy.Run): on a loaded machine a tenant's first
// connections may take longer than the acquire timeout, which is the
// server working as designed. What the load checks — no leak, no other
// error, no lost write — does not depend on how fast the machine is.
const backPressure = time.Minute

// retryPause is the wait between two attempts under back-pressure.
const retryPause = 200 * time.Millisecond

// call sends one request as tn's editor and decodes the answer into v; any
// other status than want is an error, but a 503 with Retry-After, which
// is retried until backPressure has passed (nothing was done: the
// transaction never began).
func (l *load) call(tn apitest.Tenant, method, path string, body any, want int, v any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	deadline := time.Now().Add(backPressure)
	for {
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := http.NewRequest(method, l.env.URL+path, rd)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tn.Editor)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		l.requests.Add(1)
		res, err := l.client.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") != "" && time.Now().Before(deadline) {
			l.retries.Add(1)
			time.Sleep(retryPause)
			continue
		}
		if res.StatusCode != want {
			return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
		if v != nil {
			return json.Unmarshal(b, v)
		}
		return nil
	}
}

func symmetricDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, "+"+x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, "-"+x)
		}
	}
	return out
}
