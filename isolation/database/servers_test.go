package database_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// twoServers serves with the test's server ("main") and a second
// throwaway PostgreSQL ("spare"), which starts with no Bulkhead role, and
// makes four tenants, each with an account.
func twoServers(t *testing.T, opts ...apitest.Option) (*env, *pgcluster.Cluster, []apitest.Tenant) {
	t.Helper()
	c := startCluster(t)
	e := start(t, map[string]string{"spare": c.URL("postgres", "postgres")}, opts...)
	var ts []apitest.Tenant
	for i := range 4 {
		tn := e.Tenant(t, fmt.Sprintf("tenant-%d", i))
		e.Must(t, 201, "POST", "/v1/accounts", tn.Editor, account(i))
		ts = append(ts, tn)
	}
	return e, c, ts
}

// on returns the tenants of ts placed on server.
func on(ts []apitest.Tenant, server string) []apitest.Tenant {
	var out []apitest.Tenant
	for _, tn := range ts {
		if tn.Server == server {
			out = append(out, tn)
		}
	}
	return out
}

// A second server takes half the tenants; while it is down only its own
// tenants are answered 503 (the others are served, new tenants go to the
// server that is up, and readiness names it degraded); when it is back its
// tenants are served again, without a restart.
func TestASecondServer(t *testing.T) {
	t.Parallel()
	e, c, ts := twoServers(t, apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__ACQUIRE_TIMEOUT", "1s"))
	main, spare := on(ts, "main"), on(ts, "spare")
	if len(main) != 2 || len(spare) != 2 {
		t.Fatalf("placement: %d tenants on main, %d on spare; want 2 and 2", len(main), len(spare))
	}
	for _, tn := range spare {
		conn := e.adminConn(t, "spare", tn.Placement)
		if n := pgtest.Count(t, conn, `SELECT count(*) FROM accounts`); n != 1 {
			t.Errorf("%s's database on spare holds %d accounts, want 1", tn.Slug, n)
		}
	}
	e.Must(t, 200, "GET", "/readyz", "", nil)

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, tn := range main {
		e.Must(t, 200, "GET", "/v1/accounts", tn.Viewer, nil)
	}
	for _, tn := range spare {
		begin := time.Now()
		r := e.Must(t, 503, "GET", "/v1/accounts", tn.Viewer, nil)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After: %v", r.Header)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("a tenant of the stopped server waited %s for its 503", took)
		}
	}
	var health struct {
		Status   string
		Degraded map[string]string
	}
	e.Must(t, 200, "GET", "/readyz", "", nil).JSON(t, &health)
	if health.Status != "degraded" || health.Degraded["server spare"] == "" || len(health.Degraded) != 1 {
		t.Errorf("readyz while spare is down: %+v", health)
	}
	if late := e.Tenant(t, "tenant-late"); late.Server != "main" {
		t.Errorf("a tenant created while spare is down went to %q", late.Server)
	}

	restart, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.StartAgain(restart); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, tn := range spare {
		for {
			r := e.Do(t, "GET", "/v1/accounts", tn.Viewer, nil)
			if r.Status == 200 {
				if !strings.Contains(string(r.Body), "account ") {
					t.Errorf("%s's account is gone after the restart: %s", tn.Slug, r.Body)
				}
				break
			}
			if r.Status != 503 || time.Now().After(deadline) {
				t.Fatalf("%s after its server came back: %s", tn.Slug, r)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	health.Degraded = nil
	e.Must(t, 200, "GET", "/readyz", "", nil).JSON(t, &health)
	if health.Status != "ok" || len(health.Degraded) != 0 {
		t.Errorf("readyz with both servers up: %+v", health)
	}
}

// The migration fan-out runs across databases and servers: it migrates
// every tenant database that is behind, records each one's version or
// error, continues past a tenant that fails and past a server that is
// down, and a second run picks up only what is still behind.
func TestMigrateAcrossServers(t *testing.T) {
	t.Parallel()
	e, c, ts := twoServers(t)
	main, spare := on(ts, "main"), on(ts, "spare")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Every tenant database back to nothing migrated; one of main's with a
	// table in the way of the first migration.
	for _, tn := range ts {
		conn := e.adminConn(t, tn.Server, tn.Placement)
		exec(t, conn, `DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO `+isolation.AppRole)
	}
	broken := main[1]
	exec(t, e.adminConn(t, broken.Server, broken.Placement), `CREATE TABLE public.accounts (x int)`)
	control0 := e.adminConn(t, "main", e.DB.Name)
	exec(t, control0, `UPDATE bulkhead.tenants SET version = 0`)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	report, err := e.Control.Migrate(ctx, nil)
	if !errors.Is(err, control.ErrMigrationFailed) {
		t.Fatalf("migrate with a broken tenant and a server down: %v", err)
	}
	head := migrations.Tenant.Head()
	want := map[string]string{main[0].Slug: "current", broken.Slug: "failed", spare[0].Slug: "failed", spare[1].Slug: "failed"}
	check := func(report control.MigrationReport, want map[string]string) {
		t.Helper()
		for _, m := range report.Tenants {
			if w, ok := want[m.Tenant]; ok && m.State != w {
				t.Errorf("tenant %s: %s at version %d (%s), want %s", m.Tenant, m.State, m.Version, m.Error, w)
			}
			if m.State == "current" && m.Version != head {
				t.Errorf("tenant %s is current at version %d, head is %d", m.Tenant, m.Version, head)
			}
			if m.State == "failed" && m.Error == "" {
				t.Errorf("tenant %s failed without an error recorded", m.Tenant)
			}
		}
	}
	check(report, want)
	status, err := e.Control.MigrateStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(status, want)
	if status.Failed != 3 {
		t.Errorf("migrate status counts %d failed, want 3", status.Failed)
	}
	e.Must(t, 200, "GET", "/v1/accounts", main[0].Viewer, nil) // migrated: served again
	var firstRun time.Time
	if err := control0.QueryRow(ctx, `SELECT migrated_at FROM bulkhead.tenants WHERE slug = $1`, main[0].Slug).Scan(&firstRun); err != nil {
		t.Fatal(err)
	}

	// Mend the tenant, bring the server back: the next run finishes the job
	// and leaves alone what the first one did.
	exec(t, e.adminConn(t, broken.Server, broken.Placement), `DROP TABLE public.accounts`)
	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	report, err = e.Control.Migrate(ctx, nil)
	if err != nil {
		t.Fatalf("second migration: %v (%+v)", err, report)
	}
	check(report, map[string]string{main[0].Slug: "current", broken.Slug: "current", spare[0].Slug: "current", spare[1].Slug: "current"})
	var again time.Time
	if err := control0.QueryRow(ctx, `SELECT migrated_at FROM bulkhead.tenants WHERE slug = $1`, main[0].Slug).Scan(&again); err != nil {
		t.Fatal(err)
	}
	if !again.Equal(firstRun) {
		t.Errorf("the second run migrated %s again, which the first had finished", main[0].Slug)
	}
	for _, tn := range []apitest.Tenant{broken, spare[0], spare[1]} {
		// The serving role got its grants on the tables the migration made.
		e.Must(t, 201, "POST", "/v1/accounts", tn.Editor, account(9))
	}
}
