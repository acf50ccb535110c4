//go:build citus

package verify_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// On a Citus coordinator (`make test/citus`), a database as bulkhead
// migrate leaves it verifies clean: the tenant tables distributed and
// co-located, the propagation setting in place.
func TestCitusCleanDatabase(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	if fs := check(t, pgtest.New(t)); len(fs) != 0 {
		t.Fatalf("a fresh Citus database has findings: %v", fs)
	}
}

// A tenant table left on the coordinator, one distributed apart from the
// others, and a database without the propagation setting are each named.
func TestCitusNamesEachFlaw(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	db := pgtest.New(t)
	db.Exec(t, `CREATE TABLE left_behind (tenant_id uuid NOT NULL, n int)`)
	db.Exec(t, `CREATE TABLE apart (tenant_id uuid NOT NULL, n int)`)
	db.Exec(t, `SELECT create_distributed_table('apart', 'tenant_id', colocate_with => 'none')`)
	db.Exec(t, `ALTER DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` RESET `+isolation.PropagateSetting)
	fs := check(t, db)
	for _, c := range []struct{ code, object string }{
		{verify.CodeCitusTableLocal, "left_behind"},
		{verify.CodeCitusTableNotColocated, "apart"},
		{verify.CodeCitusPropagation, db.Name},
	} {
		f, ok := find(fs, c.code, c.object)
		switch {
		case !ok:
			t.Errorf("no %s finding on %s among:\n%s", c.code, c.object, codes(fs))
		case f.Severity != isolation.Critical || f.Fix == "":
			t.Errorf("%s on %s: severity %s, fix %q; want critical with a fix", c.code, c.object, f.Severity, f.Fix)
		}
	}
	for _, f := range fs {
		if f.Code == verify.CodeCitusTableLocal || f.Code == verify.CodeCitusTableNotColocated {
			if f.Object != "table left_behind" && f.Object != "table apart" {
				t.Errorf("a tenant table bulkhead migrate distributed is reported: %v", f)
			}
		}
	}
}
