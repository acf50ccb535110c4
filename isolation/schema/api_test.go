package schema_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// The regulated profile serves the whole API on schema tenants, and
// answers a scripted session exactly as the saas profile does on shared
// tables (ids, times and the isolation name aside).
func TestRegulatedProfileBehavesAsSaaS(t *testing.T) {
	t.Parallel()
	transcripts := map[string][]string{}
	for _, profile := range []string{"saas", "regulated"} {
		env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_PROFILE", profile))
		transcripts[profile] = session(t, env)
		tenants, err := env.Control.Tenants(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"saas": isolation.RLS, "regulated": isolation.Schema}[profile]
		for _, tn := range tenants {
			if tn.Isolation != want {
				t.Errorf("%s: tenant %s is on %s, want %s", profile, tn.Slug, tn.Isolation, want)
			}
			if want == isolation.Schema && tn.Placement != schema.Name(tn.ID) {
				t.Errorf("%s: tenant %s placed in %q", profile, tn.Slug, tn.Placement)
			}
		}
	}
	saas, regulated := transcripts["saas"], transcripts["regulated"]
	if len(saas) < 20 {
		t.Fatalf("the session made only %d requests", len(saas))
	}
	for i := range max(len(saas), len(regulated)) {
		var s, r string
		if i < len(saas) {
			s = saas[i]
		}
		if i < len(regulated) {
			r = regulated[i]
		}
		if s != r {
			t.Errorf("request %d:\n saas      %s\n regulated %s", i, s, r)
		}
	}
}

// session drives env through the API as operators and tenants would, and
// returns each exchange normalised. It fails t on answers that are wrong
// under any profile.
func session(t *testing.T, env *apitest.Env) []string {
	t.Helper()
	var out []string
	admin := apitest.AdminToken
	call := func(want int, method, path, key string, body any, header ...string) *apitest.Response {
		t.Helper()
		r := env.Do(t, method, path, key, body, header...)
		out = append(out, fmt.Sprintf("%s %s -> %d %s", method, uuidRE.ReplaceAllString(path, "<uuid>"), r.Status, normalise(r.Body)))
		if r.Status != want {
			t.Errorf("%s %s: got %s, want %d", method, path, r, want)
		}
		return r
	}
	str := func(r *apitest.Response, field string) string {
		t.Helper()
		v, _ := r.Map(t)[field].(string)
		if v == "" {
			t.Fatalf("no %s in %s", field, r)
		}
		return v
	}

	call(201, "POST", "/admin/v1/tenants", admin, map[string]any{"slug": "acme", "name": "Acme"})
	call(201, "POST", "/admin/v1/tenants", admin, map[string]any{"slug": "globex"})
	call(409, "POST", "/admin/v1/tenants", admin, map[string]any{"slug": "acme"})
	call(422, "POST", "/admin/v1/tenants", admin, map[string]any{"slug": `a"; drop schema x; --`})
	call(200, "GET", "/admin/v1/tenants", admin, nil)
	keys := map[string]string{}
	for _, slug := range []string{"acme", "globex"} {
		for _, role := range []string{"editor", "viewer"} {
			keys[slug+"/"+role] = str(call(201, "POST", "/admin/v1/tenants/"+slug+"/keys", admin, map[string]any{"role": role}), "key")
		}
	}
	acme, acmeViewer, globex := keys["acme/editor"], keys["acme/viewer"], keys["globex/editor"]

	account := str(call(201, "POST", "/v1/accounts", acme, map[string]any{"provider": "aws", "external_id": "111", "name": "prod"}), "id")
	call(201, "POST", "/v1/accounts", globex, map[string]any{"provider": "aws", "external_id": "111", "name": "theirs"})
	call(409, "POST", "/v1/accounts", acme, map[string]any{"provider": "aws", "external_id": "111", "name": "again"})
	call(422, "POST", "/v1/accounts", acme, map[string]any{"provider": "ibm", "external_id": "1", "name": "x"})
	call(403, "POST", "/v1/accounts", acmeViewer, map[string]any{"provider": "gcp", "external_id": "2", "name": "x"})
	call(200, "GET", "/v1/accounts", acme, nil)
	call(200, "GET", "/v1/accounts/"+account, acmeViewer, nil)
	call(200, "PATCH", "/v1/accounts/"+account, acme, map[string]any{"name": "production"})
	call(404, "GET", "/v1/accounts/"+account, globex, nil)
	call(404, "PATCH", "/v1/accounts/"+account, globex, map[string]any{"name": "pwned"})
	call(404, "DELETE", "/v1/accounts/"+account, globex, nil)

	today := time.Now().UTC().Format("2006-01-02")
	call(201, "POST", "/v1/costs", acme, []map[string]any{
		{"account_id": account, "service": "ec2", "usage_date": today, "amount": "12.50", "currency": "USD"},
		{"account_id": account, "service": "s3", "usage_date": today, "amount": 0.25, "currency": "USD"},
	})
	call(201, "POST", "/v1/costs", acme, "account_id,service,usage_date,amount,currency\n"+account+",ec2,"+today+",1.000001,USD\n",
		"Content-Type", "text/csv")
	call(422, "POST", "/v1/costs", globex, []map[string]any{
		{"account_id": account, "service": "ec2", "usage_date": today, "amount": "1", "currency": "USD"},
	})
	call(200, "GET", "/v1/costs?account_id="+account, acme, nil)
	call(200, "GET", "/v1/costs?account_id="+account, globex, nil)
	call(200, "GET", "/v1/costs/summary?group_by=service&from="+today+"&to="+today, acme, nil)
	budget := str(call(201, "POST", "/v1/budgets", acme, map[string]any{"name": "cloud", "amount": "100", "currency": "USD", "period": "monthly"}), "id")
	call(200, "GET", "/v1/budgets/"+budget, acme, nil)
	call(200, "GET", "/v1/budgets", acme, nil)
	call(404, "GET", "/v1/budgets/"+budget, globex, nil)
	call(409, "DELETE", "/v1/accounts/"+account, acme, nil)

	call(200, "POST", "/admin/v1/tenants/acme/suspend", admin, nil)
	call(403, "GET", "/v1/accounts", acme, nil)
	call(200, "POST", "/admin/v1/tenants/acme/resume", admin, nil)
	call(200, "GET", "/v1/accounts", acme, nil)
	call(204, "DELETE", "/admin/v1/tenants/globex", admin, nil)
	call(401, "GET", "/v1/accounts", globex, nil)
	call(204, "DELETE", "/admin/v1/tenants/acme", admin, nil)
	call(200, "GET", "/readyz", "", nil)
	// Nothing of either tenant is left: no tenant schema or role.
	var left int
	if err := env.Pools.Owner.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]{32}$')
		     + (SELECT count(*) FROM bulkhead.tenants)`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d tenant schemas or records left after deleting every tenant", left)
	}
	return out
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})$`)
)

// normalise rewrites a JSON body so that two servers' answers compare:
// ids, times, secrets and the isolation name become placeholders, and
// where a tenant lives (placement, server: the strategy's) is left out.
func normalise(body []byte) string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return uuidRE.ReplaceAllString(string(body), "<uuid>")
	}
	var walk func(key string, v any) any
	walk = func(key string, v any) any {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "placement")
			delete(x, "server")
			for k, e := range x {
				x[k] = walk(k, e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(key, e)
			}
		case string:
			switch {
			case slices.Contains([]string{"key", "request_id", "next_cursor", "isolation"}, key) && x != "":
				return "<" + key + ">"
			case key == "id" && !strings.Contains(x, "-"): // a key's public id
				return "<key id>"
			case timeRE.MatchString(x):
				return "<time>"
			}
			return uuidRE.ReplaceAllString(x, "<uuid>")
		}
		return v
	}
	b, _ := json.Marshal(walk("", v))
	return string(b)
}
