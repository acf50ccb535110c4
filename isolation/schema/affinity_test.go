package schema_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// backend runs a transaction of tn and returns the backend that served
// it, checking on the way that it ran bound to tn and to nothing else.
func backend(t *testing.T, s *schema.Strategy, tn isolation.Tenant) int32 {
	t.Helper()
	ctx := context.Background()
	var pid int32
	err := s.Run(ctx, tn, func(tx pgx.Tx) error {
		var role, path string
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid(), current_user, current_setting('search_path')`).Scan(&pid, &role, &path); err != nil {
			return err
		}
		if role != schema.Name(tn.ID) || path != schema.Name(tn.ID)+", pg_temp" {
			t.Errorf("%s ran as %s with search_path %s", tn, role, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// With affinity, a tenant's transactions return to the backend that
// served it, whatever other tenants ran in between, and each runs bound
// to its own tenant only.
func TestAffinityReturnsToTheWarmBackend(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 4, app: func(c *pgxpool.Config) { c.MaxConns, c.HealthCheckPeriod = 3, time.Hour }})
	ctx := context.Background()
	// Open all three connections, so that there is a choice.
	conns := make([]*pgxpool.Conn, 3)
	for i := range conns {
		c, err := f.app.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		c.Release()
	}
	home := map[string]int32{}
	for _, tn := range f.tenants {
		home[tn.Slug] = backend(t, f.strategy, tn)
	}
	for round := range 5 {
		for i := range f.tenants {
			tn := f.tenants[(i+round)%len(f.tenants)]
			if pid := backend(t, f.strategy, tn); pid != home[tn.Slug] {
				t.Errorf("round %d: %s ran on backend %d, not on %d, which served it before and was idle", round, tn, pid, home[tn.Slug])
			}
		}
	}
	// Unbound, the connections carry nothing of any tenant.
	for range 3 {
		var role, path, setting string
		if err := f.app.QueryRow(ctx, `SELECT current_user, current_setting('search_path'), current_setting($1, true)`, isolation.Setting).Scan(&role, &path, &setting); err != nil {
			t.Fatal(err)
		}
		if role != isolation.AppRole || path != `"$user", public` || setting != "" {
			t.Errorf("a released connection is left as %s with search_path %q and %s %q", role, path, isolation.Setting, setting)
		}
	}
}

// A tenant whose warm connection is busy is served at once by another
// idle one: affinity never queues a transaction behind a busy connection.
func TestAffinityServesElsewhereWhenTheWarmConnectionIsBusy(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1, app: func(c *pgxpool.Config) { c.MaxConns, c.HealthCheckPeriod = 2, time.Hour }})
	ctx := context.Background()
	tn := f.tenants[0]
	first := backend(t, f.strategy, tn)
	held, release := make(chan int32), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			var pid int32
			if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				close(held)
				return err
			}
			held <- pid
			<-release
			return nil
		})
	}()
	if pid := await.Recv(t, held, "the first transaction to hold its connection"); pid != first {
		t.Errorf("the first transaction ran on %d, not on the warm %d", pid, first)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var other int32
	err := f.strategy.Run(tctx, tn, func(tx pgx.Tx) error {
		return tx.QueryRow(tctx, `SELECT pg_backend_pid()`).Scan(&other)
	})
	close(release)
	if err != nil {
		t.Fatalf("the second transaction, while the warm connection was busy: %v", err)
	}
	if other == first {
		t.Errorf("both transactions ran on backend %d at once", first)
	}
	if err := await.Recv(t, done, "the first transaction to end"); err != nil {
		t.Fatal(err)
	}
}

// A warm connection whose backend ended while it was idle is not handed
// out: the transaction runs on a working one.
func TestAffinitySkipsAConnectionThatDiedIdle(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1, app: func(c *pgxpool.Config) { c.MaxConns, c.HealthCheckPeriod = 2, time.Hour }})
	ctx := context.Background()
	tn := f.tenants[0]
	pid := backend(t, f.strategy, tn)
	admin, err := pgx.Connect(ctx, f.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var ended bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1, 30000)`, pid).Scan(&ended); err != nil || !ended {
		t.Fatalf("terminate backend %d: %v %v", pid, ended, err)
	}
	time.Sleep(1100 * time.Millisecond) // idle long enough to be checked
	if again := backend(t, f.strategy, tn); again == pid {
		t.Fatalf("ran on the terminated backend %d", pid)
	}
}
