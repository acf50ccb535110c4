package migrations

import (
	"slices"
	"testing"
)

// The control plane's relations are read off its migrations, for verify's
// allow-list of what the serving role may read there.
func TestRelations(t *testing.T) {
	t.Parallel()
	got := Control.Relations(ControlSchema)
	for _, want := range []string{"api_keys", "audit_log", "key_grants", "tenants"} {
		if !slices.Contains(got, want) {
			t.Errorf("Relations(%q) = %v, lacks %s", ControlSchema, got, want)
		}
	}
	if got := Control.Relations("public"); len(got) != 0 {
		t.Errorf("Relations(public) = %v, want none", got)
	}
}
