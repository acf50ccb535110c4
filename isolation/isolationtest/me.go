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

// attackPublic asks every public tenant-API operation (security: [], such
// as the identity providers a console may offer) with self's keys, naming
// other every way a request could: a public answer is the same for every
// caller — the one given without a key — and says nothing of other's.
func (s *suite) attackPublic(t *testing.T, self, other *holdings) {
	t.Helper()
	for _, op := range s.spec {
		if !op.public {
			continue
		}
		if !strings.HasPrefix(op.name, "GET ") || strings.Contains(op.path, "{") {
			t.Fatalf("public operation %s: the suite attacks public GETs without parameters only (extend attackPublic)", op.name)
		}
		anonymous := s.do(t, "", "GET", op.path, nil, other)
		if anonymous.Status != 200 {
			t.Fatalf("GET %s without a key: %s", op.path, anonymous)
		}
		for _, key := range []string{self.tenant.Editor, self.tenant.Viewer} {
			path := op.path + "?tenant=" + url.QueryEscape(other.tenant.Slug) + "&tenant_id=" + other.tenant.ID.String()
			r := s.do(t, key, "GET", path, nil, other, "X-Tenant", other.tenant.Slug, "X-Tenant-Id", other.tenant.ID.String())
			if r.Status != 200 || string(r.Body) != string(anonymous.Body) {
				t.Errorf("LEAK: public GET %s with %s's key answered %s; without a key: %s", path, self.tenant.Slug, r, anonymous.Body)
			}
		}
	}
}
