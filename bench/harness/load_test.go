package harness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSweepReachesEveryTenantAlike checks the warm-up sweep: passes
// requests to every tenant, no more, and its end is no failed request.
func TestSweepReachesEveryTenantAlike(t *testing.T) {
	cfg := Defaults()
	cfg.Tenants, cfg.Large, cfg.LargeRows, cfg.SmallRows = 30, 3, 100, 10
	d := newDataset(cfg)
	keys := make([]string, cfg.Tenants)
	byKey := map[string]int{}
	for i := range keys {
		keys[i] = "key-" + d.Tenants[i].Slug
		byKey[keys[i]] = i
	}
	var mu sync.Mutex
	seen := map[int]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, ok := byKey[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if !ok || !strings.HasPrefix(r.URL.Path, "/v1/accounts/") {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[i]++
		mu.Unlock()
	}))
	defer srv.Close()

	const passes = 3
	q := newRequests(d)
	tr := q.sweeper(PointRead, target{name: "test", url: srv.URL, keys: keys}, d.everyone(), passes, 1)
	// The limit is far beyond what 90 requests take: the sweep must end
	// by itself, and the test fails rather than wait should it not.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := attack(ctx, tr, 0, 4, 50*time.Second)
	if ctx.Err() != nil {
		t.Fatalf("the sweep did not end by itself within a minute: %d requests sent", out.ok+out.failed)
	}
	if out.ok != passes*cfg.Tenants || out.failed != 0 {
		t.Fatalf("sweep: %d ok, %d failed (first: %s); want %d ok, none failed", out.ok, out.failed, out.firstError, passes*cfg.Tenants)
	}
	for i := range cfg.Tenants {
		if seen[i] != passes {
			t.Errorf("tenant %d got %d requests; want %d", i, seen[i], passes)
		}
	}
}
