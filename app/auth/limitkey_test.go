package auth_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Every caller gets a rate-limit bucket of its own: a key by its id, a
// token by its issuer, subject and tenant. Before tokens existed the bucket
// was the key id, which is empty for every token: all token users of all
// tenants would have shared one bucket, and one tenant spent it for all.
func TestLimitKeysAreDistinct(t *testing.T) {
	a, b := isolation.Tenant{ID: uuid.New()}, isolation.Tenant{ID: uuid.New()}
	ps := []auth.Principal{
		{KeyID: "k1", Tenant: a},
		{KeyID: "k2", Tenant: a},
		{Issuer: "https://idp.example", Subject: "alice", Tenant: a},
		{Issuer: "https://idp.example", Subject: "bob", Tenant: a},
		{Issuer: "https://idp.example", Subject: "alice", Tenant: b},
		{Issuer: "https://other.example", Subject: "alice", Tenant: a},
	}
	seen := map[string]int{}
	for i, p := range ps {
		k := p.LimitKey()
		if k == "" {
			t.Fatalf("principal %d has an empty limit key", i)
		}
		if j, ok := seen[k]; ok {
			t.Errorf("principals %d and %d share the limit key %q", j, i, k)
		}
		seen[k] = i
	}
}
