package schema

import (
	"testing"

	"github.com/google/uuid"
)

// A connection remembers at most recentSize tenants, forgetting the
// oldest first: memory is bounded whatever the number of tenants.
func TestRecentTenantsIsBounded(t *testing.T) {
	var r recentTenants
	ids := make([]uuid.UUID, 3*recentSize)
	for i := range ids {
		ids[i] = uuid.New()
		r.add(ids[i])
		r.add(ids[i]) // twice: still one entry
	}
	if len(r.set) != recentSize {
		t.Fatalf("remembers %d tenants, want %d", len(r.set), recentSize)
	}
	for i, id := range ids {
		if want := i >= len(ids)-recentSize; r.has(id) != want {
			t.Fatalf("tenant %d of %d: remembered %v, want %v", i, len(ids), r.has(id), want)
		}
	}
}
