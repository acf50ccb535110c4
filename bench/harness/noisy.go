package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Attacks of the noisy-neighbour workload, as they appear in the figures.
const (
	AttackSummaries = "summaries"       // many concurrent month summaries of one large tenant
	AttackSameKey   = "same_key_ingest" // same-key ingests behind a long one
	AttackIdleFlood = "idle_flood"      // idle connections and a made-up-method flood, no key
)

// Attacks lists them in report order.
var Attacks = []string{AttackSummaries, AttackSameKey, AttackIdleFlood}

// Sizes of the attacks, from the issue.
const (
	noisySummaries   = 64     // concurrent month summaries
	noisySameKey     = 45     // same-key ingests behind each long one
	noisyLongIngest  = 20_000 // rows of the long ingest
	noisyFloodWorker = 8      // made-up-method senders
	noisyMethodBytes = 8 << 10
)

// noisyNeighbour runs, for every strategy but the baseline, a victim's
// point reads at a fixed rate alone and then under each attack, and
// records the victim's p50 and p99 (and p99 against its quiet p99), the
// attacker's status codes, /metrics' size and this process's RSS (every
// server runs in it).
func (h *harness) noisyNeighbour(ctx context.Context, deps map[string]*deployment) error {
	if len(h.data.Large) == 0 || len(h.data.Small) == 0 {
		return fmt.Errorf("the noisy-neighbour workload needs a large tenant and a small one")
	}
	idle := idleBudget(h.cfg.NoisyIdleConns)
	h.set("noisy.idle_connections", float64(idle))
	h.set("noisy.victim_rate_rps", h.cfg.NoisyRate)
	for _, s := range h.cfg.Strategies {
		if s == Baseline {
			continue
		}
		d := deps[s]
		if err := h.noisyOn(ctx, d, idle); err != nil {
			return fmt.Errorf("noisy neighbour on %s: %w", s, err)
		}
	}
	return nil
}

func (h *harness) noisyOn(ctx context.Context, d *deployment, idle int) error {
	s := d.name
	attacker, victim := h.data.Large[0], h.data.Small[0]
	tgt := d.target()
	victimReads := func() vegeta.Targeter {
		spec := h.data.Tenants[victim]
		var mu sync.Mutex
		k := 0
		return func(t *vegeta.Target) error {
			mu.Lock()
			k++
			n := k
			mu.Unlock()
			t.Method, t.Body = http.MethodGet, nil
			t.URL = tgt.url + "/v1/accounts/" + accountID(victim, 1+n%spec.Accounts).String()
			t.Header = http.Header{"Authorization": {"Bearer " + tgt.keys[victim]}}
			return nil
		}
	}
	measure := func() outcome {
		return attack(ctx, victimReads(), h.cfg.NoisyRate, 4, h.cfg.NoisyDuration)
	}
	h.set("noisy."+s+".rss_mb_before", rssMB())
	var metricsBefore int

	quiet := measure()
	if quiet.ok == 0 {
		return fmt.Errorf("the victim's quiet reads all failed: %s", quiet.firstError)
	}
	h.set("noisy."+s+".quiet.p50_ms", quiet.quantile(0.5))
	h.set("noisy."+s+".quiet.p99_ms", quiet.quantile(0.99))
	h.logf("noisy %-8s quiet           p50 %7.2f ms p99 %7.2f ms", s, quiet.quantile(0.5), quiet.quantile(0.99))

	for _, a := range Attacks {
		actx, stop := context.WithCancel(ctx)
		codes := &statusCounts{m: map[string]int{}}
		var wg sync.WaitGroup
		var setupErr error
		heldBefore := heldRefusals(ctx, tgt.url)
		switch a {
		case AttackSummaries:
			wg.Go(func() { h.floodSummaries(actx, tgt, attacker, codes) })
		case AttackSameKey:
			wg.Go(func() { h.floodSameKey(actx, tgt, attacker, codes) })
		case AttackIdleFlood:
			// /metrics is measured around the flood of made-up methods,
			// once one request of each kind the attack sends, and one
			// scrape, have made their (bounded) series: what is measured
			// is whether the flood's size shows, not whether a route
			// answered a status for the first time.
			_, _ = madeUpMethod(ctx, tgt.url, 0)
			if warm, err := openIdle(ctx, tgt.url, 2); err == nil {
				closeAll(warm)
			}
			if _, setupErr = metricsSize(ctx, tgt.url); setupErr != nil {
				break
			}
			if metricsBefore, setupErr = metricsSize(ctx, tgt.url); setupErr != nil {
				break
			}
			h.set("noisy."+s+".metrics_bytes_before", float64(metricsBefore))
			conns, err := openIdle(ctx, tgt.url, idle)
			if err != nil {
				setupErr = err
				break
			}
			defer closeAll(conns)
			for range noisyFloodWorker {
				wg.Go(func() { floodMethods(actx, tgt.url, codes) })
			}
		}
		if setupErr != nil {
			stop()
			return setupErr
		}
		under := measure()
		stop()
		wg.Wait()
		prefix := "noisy." + s + "." + a
		h.set(prefix+".p50_ms", under.quantile(0.5))
		h.set(prefix+".p99_ms", under.quantile(0.99))
		if q := quiet.quantile(0.99); q > 0 {
			h.set(prefix+".p99_vs_quiet", under.quantile(0.99)/q)
		}
		h.set(prefix+".victim_failed", float64(under.failed))
		got := codes.snapshot()
		for code, n := range got {
			h.set(prefix+".flooder."+code, float64(n))
		}
		// The refusals the server's tarpit held before answering them,
		// among the flooder's answers.
		held := heldRefusals(ctx, tgt.url) - heldBefore
		h.set(prefix+".flooder.held", held)
		h.set(prefix+".flooder_500", float64(got["500"]))
		h.set(prefix+".rss_mb", rssMB())
		h.logf("noisy %-8s %-15s p50 %7.2f ms p99 %7.2f ms (%.2f× quiet), victim failed %d%s, flooder %v, held %.0f",
			s, a, under.quantile(0.5), under.quantile(0.99), under.quantile(0.99)/quiet.quantile(0.99), under.failed,
			firstError(under), got, held)
	}
	metricsAfter, err := metricsSize(ctx, tgt.url)
	if err != nil {
		return err
	}
	h.set("noisy."+s+".metrics_bytes_after", float64(metricsAfter))
	h.set("noisy."+s+".metrics_growth", float64(metricsAfter)/float64(max(metricsBefore, 1)))
	h.set("noisy."+s+".rss_mb_after", rssMB())
	return nil
}

// statusCounts counts an attacker's answers by status ("429"), or
// "error" for requests that got none.
type statusCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *statusCounts) add(code int, err error) {
	key := strconv.Itoa(code)
	if err != nil || code == 0 {
		key = "error"
	}
	c.mu.Lock()
	c.m[key]++
	c.mu.Unlock()
}

func (c *statusCounts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// floodSummaries keeps noisySummaries month summaries of the attacker in
// flight until ctx ends.
func (h *harness) floodSummaries(ctx context.Context, tgt target, attacker int, codes *statusCounts) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: noisySummaries}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for w := range noisySummaries {
		wg.Go(func() {
			for k := w; ctx.Err() == nil; k++ {
				from, to := h.data.month(k % 12)
				code, err := send(ctx, client, http.MethodGet, tgt.url+"/v1/costs/summary?group_by=service&from="+from+"&to="+to, tgt.keys[attacker], nil, "")
				if ctx.Err() == nil {
					codes.add(code, err)
				}
			}
		})
	}
	wg.Wait()
}

// floodSameKey sends, until ctx ends, a long ingest and right behind it
// noisySameKey ingests with the same Idempotency-Key, a new key each
// round.
func (h *harness) floodSameKey(ctx context.Context, tgt target, attacker int, codes *statusCounts) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: noisySameKey + 1}}
	defer client.CloseIdleConnections()
	long := h.data.ingestBody(h.data.Tenants[attacker], noisyLongIngest)
	short := h.data.ingestBody(h.data.Tenants[attacker], 1)
	for round := 0; ctx.Err() == nil; round++ {
		key := fmt.Sprintf("noisy-%d-%d", time.Now().UnixNano(), round)
		var wg sync.WaitGroup
		wg.Go(func() {
			code, err := send(ctx, client, http.MethodPost, tgt.url+"/v1/costs", tgt.keys[attacker], long, key)
			if ctx.Err() == nil {
				codes.add(code, err)
			}
		})
		time.Sleep(20 * time.Millisecond) // the long one is under way
		for range noisySameKey {
			wg.Go(func() {
				code, err := send(ctx, client, http.MethodPost, tgt.url+"/v1/costs", tgt.keys[attacker], short, key)
				if ctx.Err() == nil {
					codes.add(code, err)
				}
			})
		}
		wg.Wait()
	}
}

// send sends one request and drains its answer.
func send(ctx context.Context, client *http.Client, method, u, key string, body []byte, idempotencyKey string) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// openIdle opens n connections to the server at u and leaves them idle:
// every other one sends nothing at all, the others one request and then
// nothing. Connections the server closes stay closed.
func openIdle(ctx context.Context, u string, n int) ([]net.Conn, error) {
	host, err := hostOf(u)
	if err != nil {
		return nil, err
	}
	conns := make([]net.Conn, 0, n)
	var d net.Dialer
	for i := range n {
		c, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			if ctx.Err() != nil {
				closeAll(conns)
				return nil, ctx.Err()
			}
			break // out of ports or descriptors: attack with what was opened
		}
		conns = append(conns, c)
		if i%2 == 1 {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			c.SetDeadline(time.Time{})
		}
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// floodMethods sends requests with made-up 8 KB methods and no key until
// ctx ends.
func floodMethods(ctx context.Context, u string, codes *statusCounts) {
	for i := 1; ctx.Err() == nil; i++ {
		code, err := madeUpMethod(ctx, u, i)
		if ctx.Err() == nil {
			codes.add(code, err)
		}
	}
}

// madeUpMethod sends one request with the i-th made-up 8 KB method, on a
// connection of its own, and returns its status.
func madeUpMethod(ctx context.Context, u string, i int) (int, error) {
	host, err := hostOf(u)
	if err != nil {
		return 0, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "X%d%s /v1/accounts HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", i, strings.Repeat("M", noisyMethodBytes), host)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

func hostOf(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	return p.Host, nil
}

// metricsSize returns the size of the server's /metrics in bytes.
func metricsSize(ctx context.Context, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return len(b), err
}

var heldTotal = regexp.MustCompile(`(?m)^bulkhead_http_refusals_held_total (\S+)$`)

// heldRefusals returns how many refusals the server at u has held so far
// (bulkhead_http_refusals_held_total), or 0 when its /metrics does not
// say.
func heldRefusals(ctx context.Context, u string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/metrics", nil)
	if err != nil {
		return 0
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0
	}
	m := heldTotal.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	return n
}

// rssMB is this process's resident set size in MiB (Linux; 0 elsewhere).
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// idleBudget is how many idle connections the attack may open: want, or
// fewer when the process may not open that many files (its own end of each
// counts, and the servers need theirs). It raises the soft limit to the
// hard one first.
func idleBudget(want int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return min(want, 1000)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return max(min(want, int(lim.Cur)-4096), 0)
}

// noisySettings describes the noisy-neighbour runs for the report.
func noisySettings(cfg Config) string {
	if !cfg.Noisy {
		return "not run"
	}
	return fmt.Sprintf("the victim (the first small tenant) reads one account by id at %g req/s for %s alone, then for %s under each attack: "+
		"(%s) %d concurrent month summaries of the first large tenant, without pause; "+
		"(%s) a %d-item ingest with a fresh Idempotency-Key and, 20 ms behind it, %d one-item ingests with the same key, round after round; "+
		"(%s) up to %d idle connections (half never send a byte, half go idle after one request) while %d clients send requests with made-up %d-byte methods and no key. "+
		"held: of the flooder's refusals, those the server's tarpit (limits.tarpit) held before answering them. "+
		"Servers keep the product's default limits except the per-key rate limit (off, as in every run of the harness) and limits.concurrency.heavy_per_tenant (half this machine's cores, since PostgreSQL runs here)",
		cfg.NoisyRate, cfg.NoisyDuration, cfg.NoisyDuration,
		AttackSummaries, noisySummaries, AttackSameKey, noisyLongIngest, noisySameKey,
		AttackIdleFlood, cfg.NoisyIdleConns, noisyFloodWorker, noisyMethodBytes)
}

// firstError is ", first: …" naming an outcome's first failure, or "".
func firstError(o outcome) string {
	if o.failed == 0 {
		return ""
	}
	return ", first: " + strings.TrimSpace(o.firstError)
}
