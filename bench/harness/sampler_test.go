package harness

import (
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// The connection sampler counts sessions, not a parallel query's workers,
// which pg_stat_activity lists under their leader's role and database
// but which hold no connection slot: one session running a parallel query
// is one session.
func TestSamplerCountsSessionsNotParallelWorkers(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	session, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(context.Background())
	// A worker runs the query (debug_parallel_query; before PostgreSQL 16
	// force_parallel_mode) for as long as the sleep.
	if _, err := session.Exec(ctx, `SET debug_parallel_query = on`); err != nil {
		if _, err := session.Exec(ctx, `SET force_parallel_mode = on`); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	pattern := "^" + regexp.QuoteMeta(db.Name) + "$"
	smp := startSamplerOf(ctx, admin, 10*time.Millisecond, isolation.AppRole, pattern)
	defer func() {
		if smp != nil {
			smp.Stop()
		}
	}()

	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := session.Exec(ctx, `SELECT pg_sleep(1.5)`)
		done <- err
	})
	// On a failure below, the query ends before the session closes.
	defer func() {
		cancel()
		wg.Wait()
	}()
	// The worker is listed beside its leader: what the sampler must not
	// count.
	watch, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	for seen := false; !seen; {
		var workers int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'parallel worker' AND usename = $1 AND datname = $2`, isolation.AppRole, db.Name).Scan(&workers)
		if err != nil {
			t.Fatalf("waiting for the parallel worker: %v", err)
		}
		seen = workers > 0
		select {
		case err := <-done:
			t.Fatalf("the query ended (%v) before a parallel worker was seen", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	peak, samples := smp.Stop()
	smp = nil
	if samples == 0 || peak != 1 {
		t.Fatalf("sampler saw at most %d sessions in %d samples; want the 1 session", peak, samples)
	}
}
