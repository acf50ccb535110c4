package harness

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/migrations"
)

// TestTenantScript checks that the migration anchor's script is the Up
// part of every tenant migration file, in order, and nothing of their Down
// parts: each transactional migration between BEGIN and COMMIT, the
// NO TRANSACTION one (CREATE INDEX CONCURRENTLY) outside any.
func TestTenantScript(t *testing.T) {
	t.Parallel()
	script, err := TenantScript()
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(migrations.Tenant.FS(), "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("tenant migrations: %v %v", names, err)
	}
	at := 0
	for _, name := range names {
		b, err := fs.ReadFile(migrations.Tenant.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		_, after, ok := strings.Cut(src, "-- +goose Up\n")
		if !ok {
			t.Fatalf("%s: no Up annotation", name)
		}
		up, down, _ := strings.Cut(after, "-- +goose Down\n")
		i := strings.Index(script[at:], strings.TrimSpace(up))
		if i < 0 {
			t.Errorf("%s: the script has not its Up part after what came before", name)
			continue
		}
		head := script[at : at+i]
		at += i + len(strings.TrimSpace(up))
		noTx := strings.Contains(src, "-- +goose NO TRANSACTION")
		if wrapped := strings.HasSuffix(strings.TrimSpace(head), "BEGIN;"); wrapped == noTx {
			t.Errorf("%s: wrapped in BEGIN %v, want %v", name, wrapped, !noTx)
		}
		if !noTx && !strings.HasPrefix(script[at:], "\nCOMMIT;\n") {
			t.Errorf("%s: no COMMIT after its Up part", name)
		}
		for line := range strings.Lines(down) {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "DROP ") && strings.Contains(script, l) {
				t.Errorf("%s: the script has its Down statement %q", name, l)
			}
		}
	}
	if n := strings.Count(script, "CREATE INDEX CONCURRENTLY"); n == 0 {
		t.Error("the script has no CREATE INDEX CONCURRENTLY: is the NO TRANSACTION migration missing?")
	}
}
