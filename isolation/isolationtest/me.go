package isolationtest

import (
	"net/url"
	"strings"
	"testing"
)

// attackMe asks GET /v1/me with self's keys, naming other every way a
// request could: the answer is always self's tenant, and says nothing of
// other's.
func (s *suite) attackMe(t *testing.T, self, other *holdings) {
	t.Helper()
	for _, key := range []string{self.tenant.Editor, self.tenant.Viewer} {
		for _, path := range []string{
			"/v1/me",
			"/v1/me?tenant=" + url.QueryEscape(other.tenant.Slug) + "&tenant_id=" + other.tenant.ID.String(),
		} {
			r := s.do(t, key, "GET", path, nil, other, "X-Tenant", other.tenant.Slug, "X-Tenant-Id", other.tenant.ID.String())
			if r.Status != 200 {
				t.Fatalf("GET %s as %s: %s", path, self.tenant.Slug, r)
			}
			me := r.Map(t)
			tenant, _ := me["tenant"].(map[string]any)
			if tenant["slug"] != self.tenant.Slug || strings.Contains(string(r.Body), other.tenant.Slug) {
				t.Errorf("LEAK: GET %s with %s's key answered %s", path, self.tenant.Slug, r.Body)
			}
		}
	}
}
