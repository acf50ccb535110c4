package rls_test

import (
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

// The shared-tables strategy passes the conformance suite with both walls
// standing.
func TestConformance(t *testing.T) {
	t.Parallel()
	isolationtest.Run(t, isolation.RLS)
}

// With the application's tenant filter rewritten away in every statement
// the stores send, the database's wall alone keeps the tenants apart —
// raw SQL included.
func TestConformanceDatabaseWallAlone(t *testing.T) {
	t.Parallel()
	bypass := isolationtest.NewFilterBypass()
	isolationtest.Run(t, isolation.RLS, bypass.Option())
	checkBypassed(t, bypass)
}

// With Row-Level Security switched off and its policies dropped, the
// application's tenant filter alone keeps the tenants apart over the API.
func TestConformanceApplicationWallAlone(t *testing.T) {
	t.Parallel()
	isolationtest.RunAPI(t, isolation.RLS, isolationtest.WithoutDatabaseWall())
}

// The negative control: with both walls removed the suite fails, reporting
// leaks — so the runs above, which pass, are known to be able to catch one.
func TestConformanceCatchesALeak(t *testing.T) {
	t.Parallel()
	leaks := isolationtest.ExpectLeak(t, "TestConformanceBothWallsRemoved")
	for _, want := range []string{"GET /v1/accounts/", "PATCH /v1/accounts/", "GET /v1/budgets/", "DELETE /v1/budgets/", "GET /v1/costs?", "GET /v1/costs/summary?", "changed"} {
		found := false
		for _, l := range leaks {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no leak reported for %q among:\n%s", want, strings.Join(leaks, "\n"))
		}
	}
}

// TestConformanceBothWallsRemoved is the leaking run TestConformanceCatchesALeak
// expects to fail; it does nothing outside that child process.
func TestConformanceBothWallsRemoved(t *testing.T) {
	if !isolationtest.IsChild(t) {
		return // run by TestConformanceCatchesALeak, in a child process
	}
	bypass := isolationtest.NewFilterBypass()
	isolationtest.RunAPI(t, isolation.RLS, bypass.Option(), isolationtest.WithoutDatabaseWall())
	checkBypassed(t, bypass)
}

// checkBypassed fails unless the bypass rewrote the stores' reads, updates
// and deletes: a bypass that matched nothing would prove nothing.
func checkBypassed(t *testing.T, bypass *isolationtest.FilterBypass) {
	t.Helper()
	stmts := bypass.Statements()
	t.Logf("%d statements rewritten, %d distinct: %q", bypass.Rewrites(), len(stmts), stmts)
	if bypass.Rewrites() == 0 {
		t.Fatal("the tenant filter was never rewritten: the stores do not write it as tenant_id = $1")
	}
	for _, verb := range []string{"SELECT", "UPDATE", "DELETE"} {
		found := false
		for _, s := range stmts {
			found = found || strings.HasPrefix(strings.TrimSpace(s), verb)
		}
		if !found {
			t.Errorf("no %s statement had its tenant filter rewritten; rewritten: %q", verb, stmts)
		}
	}
	for _, s := range stmts {
		if strings.Contains(s, "tenant_id = $1") {
			t.Errorf("a rewritten statement keeps the filter: %s", s)
		}
	}
}
