package schema_test

import (
	"testing"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/isolationtest"
)

// The schema-per-tenant strategy passes the conformance suite with every
// wall standing.
func TestConformance(t *testing.T) {
	t.Parallel()
	isolationtest.Run(t, isolation.Schema)
}

// With the application's tenant filter rewritten away in every statement
// the stores send, the database alone keeps the tenants apart — raw SQL
// included.
func TestConformanceDatabaseWallAlone(t *testing.T) {
	t.Parallel()
	bypass := isolationtest.NewFilterBypass()
	isolationtest.Run(t, isolation.Schema, bypass.Option())
	if bypass.Rewrites() == 0 {
		t.Fatal("the tenant filter was never rewritten: the bypass proved nothing")
	}
}

// With the application's tenant filter rewritten away and Row-Level
// Security switched off and its policies dropped, the schemas and roles
// alone keep the tenants apart over the API.
func TestConformanceSchemaWallAlone(t *testing.T) {
	t.Parallel()
	bypass := isolationtest.NewFilterBypass()
	isolationtest.RunAPI(t, isolation.Schema, bypass.Option(), isolationtest.WithoutDatabaseWall())
	if bypass.Rewrites() == 0 {
		t.Fatal("the tenant filter was never rewritten: the bypass proved nothing")
	}
}

// With Row-Level Security switched off and its policies dropped, the
// application's tenant filter and the schemas keep the tenants apart over
// the API.
func TestConformanceWithoutRLS(t *testing.T) {
	t.Parallel()
	isolationtest.RunAPI(t, isolation.Schema, isolationtest.WithoutDatabaseWall())
}
