package httpapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// One deployment takes a tenant of each strategy through POST
// /admin/v1/tenants and serves each; a strategy isolation.allowed does
// not list, or a server with another strategy, is a 422 that leaves
// nothing behind.
func TestAdminCreateTenantChoosesTheStrategy(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_ISOLATION__ALLOWED", "[rls, schema, database]"))
	for _, strategy := range []string{"rls", "schema", "database"} {
		slug := "in-" + strategy
		body := map[string]any{"slug": slug, "isolation": strategy}
		if strategy == "database" {
			body["server"] = "default"
		}
		got := env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, body).Map(t)
		// Tenant databases belong to the cluster, not the test's database.
		t.Cleanup(func() { env.Do(t, "DELETE", "/admin/v1/tenants/"+slug, apitest.AdminToken, nil) })
		if got["isolation"] != strategy || got["status"] != "active" {
			t.Errorf("created in %s: %v", strategy, got)
		}
		if strategy != "rls" && (got["placement"] == nil || got["placement"] == "") {
			t.Errorf("a %s tenant has no placement: %v", strategy, got)
		}
		key := env.Must(t, 201, "POST", "/admin/v1/tenants/"+slug+"/keys", apitest.AdminToken, map[string]any{"role": "editor"}).Map(t)["key"].(string)
		acct := env.Must(t, 201, "POST", "/v1/accounts", key, map[string]any{"provider": "aws", "external_id": slug, "name": slug}).Map(t)
		list := env.Must(t, 200, "GET", "/v1/accounts", key, nil).Map(t)
		items, _ := list["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["id"] != acct["id"] {
			t.Errorf("%s tenant's accounts: %v; want only its own", strategy, list)
		}
	}
	var all struct {
		Items []map[string]any `json:"items"`
	}
	env.Must(t, 200, "GET", "/admin/v1/tenants", apitest.AdminToken, nil).JSON(t, &all)
	seen := map[string]bool{}
	for _, tn := range all.Items {
		seen[fmt.Sprint(tn["isolation"])] = true
	}
	if len(seen) != 3 {
		t.Errorf("tenants of %v, want one of each strategy", seen)
	}
	var report struct {
		Critical int `json:"critical"`
	}
	env.Must(t, 200, "GET", "/admin/v1/verify", apitest.AdminToken, nil).JSON(t, &report)
	if report.Critical != 0 {
		t.Errorf("verify of the mixed deployment: %+v", report)
	}

	for _, tc := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"slug": "no-shard", "isolation": "shard"}, `"shard" is not one of the strategies this deployment allows`},
		{map[string]any{"slug": "no-server", "isolation": "schema", "server": "default"}, "a server is chosen only for the database strategy"},
		{map[string]any{"slug": "no-server", "isolation": "database", "server": "elsewhere"}, `"elsewhere" is not a server`},
		{map[string]any{"slug": "no-server", "server": "default"}, "a server is chosen only for the database strategy"},
	} {
		r := env.Must(t, 422, "POST", "/admin/v1/tenants", apitest.AdminToken, tc.body)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") || !strings.Contains(fmt.Sprint(r.Map(t)["detail"]), tc.want) {
			t.Errorf("%v: %s %s; want a problem saying %q", tc.body, ct, r.Body, tc.want)
		}
	}
	env.Must(t, 404, "GET", "/admin/v1/tenants/no-server", apitest.AdminToken, nil)
	env.Must(t, 404, "GET", "/admin/v1/tenants/no-shard", apitest.AdminToken, nil)
}

// A strategy the deployment runs but does not allow is refused for a new
// tenant and for a move alike.
func TestAdminRefusesAStrategyNotAllowed(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_ISOLATION__ALLOWED", "[rls]"))
	r := env.Must(t, 422, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme", "isolation": "schema"})
	if !strings.Contains(string(r.Body), "isolation.allowed: rls") {
		t.Errorf("create in schema: %s", r.Body)
	}
	env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme"})
	r = env.Must(t, 422, "POST", "/admin/v1/tenants/acme/move", apitest.AdminToken, map[string]any{"to": "database"})
	if !strings.Contains(fmt.Sprint(r.Map(t)["detail"]), `"database" is not one of the strategies this deployment allows`) {
		t.Errorf("move to database: %s", r.Body)
	}
	got := env.Must(t, 200, "GET", "/admin/v1/tenants/acme", apitest.AdminToken, nil).Map(t)
	if got["isolation"] != "rls" {
		t.Errorf("after a refused move: %v", got)
	}
}
