package move_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// BenchmarkMove moves a tenant holding 200,000 cost items (2,000 with
// -short) from rls to a database of its own and back, while it takes 50
// mixed requests a second (account writes, account lists, cost summaries)
// through the API. It reports each move's write pause and total time, the
// requests that failed and the acknowledged writes lost or duplicated
// (all three must be 0):
//
//	go run ./internal/cmd/withpg -- go test -run '^$' -bench Move -benchtime 1x [-short] ./app/move/
func BenchmarkMove(b *testing.B) {
	items := 200_000
	if testing.Short() {
		items = 2_000
	}
	for b.Loop() {
		b.StopTimer()
		bt := setupBench(b, items)
		l := paced(bt, 50)
		time.Sleep(20 * time.Second) // a baseline: what fails before any move, long enough for a backlog to show
		b.Logf("before the moves: %d of %d requests failed", l.failed.Load(), l.sent.Load())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		b.StartTimer()
		for _, to := range []string{isolation.Database, isolation.RLS} {
			begin := time.Now()
			mv, err := bt.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: to})
			if err != nil {
				b.Fatalf("move to %s: %v", to, err)
			}
			b.ReportMetric(float64(*mv.PauseMS), "pause-ms-to-"+to)
			b.ReportMetric(time.Since(begin).Seconds(), "move-s-to-"+to)
			b.Logf("to %s: write pause %d ms, move %s, %d requests failed so far", to, *mv.PauseMS, time.Since(begin).Round(time.Millisecond), l.failed.Load())
		}
		b.StopTimer()
		cancel()
		l.end(b)
		got := accounts(b, bt)
		lost, acked := 0, 0
		bt.acked.Range(func(ext, id any) bool {
			acked++
			if got[ext.(string)] != id.(string) {
				lost++
			}
			return true
		})
		dup := max(len(got)-6-acked, 0) // 5 seeded, 1 for the costs
		b.ReportMetric(float64(l.failed.Load()), "failed-requests")
		b.ReportMetric(float64(lost), "lost-writes")
		b.ReportMetric(float64(dup), "duplicated-writes")
		b.ReportMetric(float64(l.sent.Load()), "requests")
		if lost+dup > 0 || l.failed.Load() > 0 {
			b.Errorf("%d requests failed (first: %q), %d writes lost, %d duplicated", l.failed.Load(), l.first, lost, dup)
		}
		b.StartTimer()
	}
}

// setupBench is setup with items cost items, loaded through the API.
func setupBench(b *testing.B, items int) bundle {
	// Requests queue at the tenant's fence during the cut-over: its
	// queue must hold a pause's worth of them (the defaults, 8 running
	// and 32 waiting, hold 0.8 s at 50 a second).
	bt := setup(b, isolation.RLS,
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_PER_TENANT", "256"),
		apitest.WithEnv("BULKHEAD_LIMITS__CONCURRENCY__QUEUE_TIMEOUT", "10s"))
	var acct struct{ ID string }
	bt.env.Must(b, 201, "POST", "/v1/accounts", bt.tn.Editor, map[string]any{"provider": "aws", "external_id": "bench", "name": "bench"}).JSON(b, &acct)
	for done := 0; done < items; {
		n := min(5000, items-done)
		batch := make([]map[string]any, n)
		for i := range batch {
			k := done + i
			batch[i] = map[string]any{"account_id": acct.ID, "service": fmt.Sprintf("svc-%d", k%20),
				"usage_date": fmt.Sprintf("2026-%02d-%02d", 1+k%12, 1+k%28), "amount": fmt.Sprintf("%d.%04d", k%1000, k%10000), "currency": "USD"}
		}
		bt.env.Must(b, 201, "POST", "/v1/costs", bt.tn.Editor, batch)
		done += n
	}
	return bt
}

// pacer sends rate requests a second, each on its own goroutine (at most
// 200 at once), a third of them writes.
type pacer struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	sent   atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	first  []string // the first failures
}

func (p *pacer) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.first) < 5 {
		p.first = append(p.first, s)
	}
}

func paced(bt bundle, rate int) *pacer {
	p := &pacer{stop: make(chan struct{})}
	slots := make(chan struct{}, 200)
	p.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				p.failed.Add(1)
				p.note("200 requests in flight: the server is not keeping up with the rate")
				continue
			}
			p.sent.Add(1)
			p.wg.Go(func() {
				defer func() { <-slots }()
				if !p.one(bt, i) {
					p.failed.Add(1)
				}
			})
		}
	})
	return p
}

func (p *pacer) one(bt bundle, i int) bool {
	method, path, key, want := "GET", "/v1/accounts?limit=20", bt.tn.Viewer, 200
	var body []byte
	ext := fmt.Sprintf("p-%d", seq.Add(1))
	switch i % 3 {
	case 0:
		method, path, key, want = "POST", "/v1/accounts", bt.tn.Editor, 201
		body, _ = json.Marshal(map[string]any{"provider": "gcp", "external_id": ext, "name": "paced"})
	case 1:
		// A month's summary, as the bench's cost_summary workload: a
		// year's over 200,000 items, 17 times a second, is more than a
		// 2-core machine serves even without a move (every request then
		// fails, moved or not).
		path = "/v1/costs/summary?from=2026-06-01&to=2026-06-30&group_by=service"
	}
	req, err := http.NewRequest(method, bt.env.URL+path, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := bt.env.Client.Do(req)
	if err != nil {
		p.note(err.Error())
		return false
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		p.note(fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, out))
		return false
	}
	if method == "POST" {
		var a struct{ ID string }
		if json.Unmarshal(out, &a) != nil {
			return false
		}
		bt.acked.Store(ext, a.ID)
	}
	return true
}

// end stops the pacer and waits for its requests (each bounded by the
// client's timeout), failing tb past await.Deadline.
func (p *pacer) end(tb testing.TB) {
	tb.Helper()
	close(p.stop)
	await.Group(tb, &p.wg, "the pacer's requests to end")
}
