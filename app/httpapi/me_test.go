package httpapi_test

import (
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// GET /v1/me says which tenant a key speaks for and what it may do, and
// nothing of another tenant.
func TestMe(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme", "name": "Acme Corp"})
	editor := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, map[string]any{"role": "editor"}).Map(t)
	viewer := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, nil).Map(t)
	for _, k := range []map[string]any{editor, viewer} {
		me := env.Must(t, 200, "GET", "/v1/me", k["key"].(string), nil).Map(t)
		tenant, _ := me["tenant"].(map[string]any)
		if me["role"] != k["role"] || me["key_id"] != k["id"] || tenant["slug"] != "acme" || tenant["name"] != "Acme Corp" || len(tenant) != 2 {
			t.Errorf("GET /v1/me with the %s key: %v", k["role"], me)
		}
	}
	env.Must(t, 401, "GET", "/v1/me", "", nil)
	env.Must(t, 401, "GET", "/v1/me", "bh_aaaaaaaaaaaaaaaa_"+strings.Repeat("a", 52), nil)
	env.Must(t, 200, "POST", "/admin/v1/tenants/acme/suspend", apitest.AdminToken, nil)
	env.Must(t, 403, "GET", "/v1/me", viewer["key"].(string), nil)
}

// The admin API reports where each tenant lives and its migration state,
// and what verify finds.
func TestAdminTenantPlacementAndVerify(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithStrategy("schema"))
	env.Tenant(t, "acme")
	var list struct {
		Items []map[string]any `json:"items"`
	}
	env.Must(t, 200, "GET", "/admin/v1/tenants", apitest.AdminToken, nil).JSON(t, &list)
	if len(list.Items) != 1 {
		t.Fatalf("tenants: %v", list.Items)
	}
	got := list.Items[0]
	if got["isolation"] != "schema" || got["placement"] == nil || got["placement"] == "" || got["version"] == nil || got["migrated_at"] == nil {
		t.Errorf("a schema tenant: %v; want its placement, version and migrated_at", got)
	}

	env.Must(t, 401, "GET", "/admin/v1/verify", "", nil)
	var report struct {
		Items []struct {
			Code, Severity, Object, Detail, Fix string
		} `json:"items"`
		Critical  int    `json:"critical"`
		CheckedAt string `json:"checked_at"`
	}
	env.Must(t, 200, "GET", "/admin/v1/verify", apitest.AdminToken, nil).JSON(t, &report)
	if report.Critical != 0 || report.CheckedAt == "" {
		t.Errorf("verify on a fresh deployment: %+v", report)
	}
	// A flaw planted as superuser is reported, as `bulkhead verify` would.
	env.DB.Exec(t, `ALTER TABLE public.accounts NO FORCE ROW LEVEL SECURITY`)
	env.Must(t, 200, "GET", "/admin/v1/verify", apitest.AdminToken, nil).JSON(t, &report)
	found := false
	for _, f := range report.Items {
		if strings.Contains(f.Object, "accounts") && f.Severity == "critical" && f.Fix != "" {
			found = true
		}
	}
	if !found || report.Critical == 0 {
		t.Errorf("verify does not report accounts without forced RLS: %+v", report)
	}
}
