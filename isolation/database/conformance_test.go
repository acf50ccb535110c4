package database_test

import (
	"testing"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

// The database-per-tenant strategy passes the conformance suite with both
// walls standing: each tenant in a database of its own, under the tenant
// policy there.
func TestConformance(t *testing.T) {
	t.Parallel()
	isolationtest.Run(t, isolation.Database, dropTenantDatabases(nil))
}

// With the application's tenant filter rewritten away in every statement
// the stores send, the database's walls alone keep the tenants apart.
func TestConformanceDatabaseWallAlone(t *testing.T) {
	t.Parallel()
	bypass := isolationtest.NewFilterBypass()
	isolationtest.Run(t, isolation.Database, bypass.Option(), dropTenantDatabases(nil))
	if bypass.Rewrites() == 0 {
		t.Fatal("the tenant filter was never rewritten: the bypass proved nothing")
	}
}
