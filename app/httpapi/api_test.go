package httpapi_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func account(i int) map[string]any {
	return map[string]any{"provider": "aws", "external_id": fmt.Sprintf("%012d", i), "name": fmt.Sprintf("account %d", i)}
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	created := env.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1)).Map(t)
	id := created["id"].(string)
	if created["provider"] != "aws" || created["name"] != "account 1" {
		t.Fatalf("created %v", created)
	}
	env.Must(t, 200, "GET", "/v1/accounts/"+id, a.Viewer, nil)
	// The conflict is named for the client, on Citus too (whose workers'
	// errors arrive without the constraint's name).
	if d := env.Must(t, 409, "POST", "/v1/accounts", a.Editor, account(1)).Map(t)["detail"]; d != "an account with this provider and external_id already exists" {
		t.Errorf("a duplicate account: detail %q", d)
	}
	updated := env.Must(t, 200, "PATCH", "/v1/accounts/"+id, a.Editor, map[string]any{"name": "renamed"}).Map(t)
	if updated["name"] != "renamed" || updated["external_id"] != "000000000001" {
		t.Errorf("updated %v", updated)
	}
	r := env.Must(t, 422, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "ibm", "name": ""})
	for _, field := range []string{"provider", "external_id", "name"} {
		if !strings.Contains(string(r.Body), `"field":"`+field+`"`) {
			t.Errorf("422 does not name %s: %s", field, r.Body)
		}
	}
	env.Must(t, 422, "POST", "/v1/accounts", a.Editor, `{"provider":"aws","external_id":"x\u0000y","name":"nul"}`)
	env.Must(t, 204, "DELETE", "/v1/accounts/"+id, a.Editor, nil)
	env.Must(t, 404, "GET", "/v1/accounts/"+id, a.Editor, nil)
	env.Must(t, 404, "DELETE", "/v1/accounts/"+id, a.Editor, nil)
}

// Tenant A cannot read, update or delete tenant B's account: 404, as if it
// did not exist, and B's row is untouched. Run in both directions.
func TestAnotherTenantsAccountIsNotFound(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")
	for _, dir := range []struct{ self, other apitest.Tenant }{{a, b}, {b, a}} {
		theirs := env.Must(t, 201, "POST", "/v1/accounts", dir.other.Editor, account(7)).Map(t)
		path := "/v1/accounts/" + theirs["id"].(string)
		missing := env.Must(t, 404, "GET", "/v1/accounts/00000000-0000-7000-8000-000000000000", dir.self.Editor, nil)
		for _, req := range []struct{ method, body string }{
			{"GET", ""}, {"PATCH", `{"name":"pwned"}`}, {"DELETE", ""},
		} {
			var body any
			if req.body != "" {
				body = req.body
			}
			r := env.Must(t, 404, req.method, path, dir.self.Editor, body)
			if r.Map(t)["detail"] != missing.Map(t)["detail"] {
				t.Errorf("%s of another tenant's account differs from a missing one: %s vs %s", req.method, r.Body, missing.Body)
			}
		}
		list := env.Must(t, 200, "GET", "/v1/accounts", dir.self.Editor, nil)
		if strings.Contains(string(list.Body), theirs["id"].(string)) {
			t.Errorf("%s's list shows %s's account", dir.self.Slug, dir.other.Slug)
		}
		after := env.Must(t, 200, "GET", path, dir.other.Viewer, nil).Map(t)
		if after["name"] != theirs["name"] || after["updated_at"] != theirs["updated_at"] {
			t.Errorf("%s's account changed: %v -> %v", dir.other.Slug, theirs, after)
		}
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	r := env.Must(t, 401, "GET", "/v1/accounts", "", nil)
	if r.Header.Get("WWW-Authenticate") == "" || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("401 headers: %v", r.Header)
	}
	for _, key := range []string{
		"nonsense",
		"bh_aaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52), // well formed, unknown
		a.Editor[:len(a.Editor)-1] + "b",                 // right id, wrong secret
	} {
		env.Must(t, 401, "GET", "/v1/accounts", key, nil)
	}
	// A viewer reads but does not write.
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	env.Must(t, 403, "POST", "/v1/accounts", a.Viewer, account(1))
	// Suspension refuses the tenant's keys until it resumes.
	env.Must(t, 200, "POST", "/admin/v1/tenants/acme/suspend", apitest.AdminToken, nil)
	env.Must(t, 403, "GET", "/v1/accounts", a.Editor, nil)
	env.Must(t, 200, "POST", "/admin/v1/tenants/acme/resume", apitest.AdminToken, nil)
	env.Must(t, 200, "GET", "/v1/accounts", a.Editor, nil)
	// A revoked key stops working on the next request.
	key := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, map[string]any{"role": "editor"}).Map(t)
	env.Must(t, 200, "GET", "/v1/accounts", key["key"].(string), nil)
	env.Must(t, 204, "DELETE", "/admin/v1/keys/"+key["id"].(string), apitest.AdminToken, nil)
	env.Must(t, 401, "GET", "/v1/accounts", key["key"].(string), nil)
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Must(t, 401, "GET", "/admin/v1/tenants", "", nil)
	env.Must(t, 401, "GET", "/admin/v1/tenants", "wrong-token-wrong-token-wrong-token", nil)
	// Tokens of every length are compared the same way (as digests): a
	// prefix, the token and more, one character changed.
	for _, tok := range []string{apitest.AdminToken[:8], apitest.AdminToken + "x", "x" + apitest.AdminToken[1:]} {
		env.Must(t, 401, "GET", "/admin/v1/tenants", tok, nil)
	}
	a := env.Tenant(t, "acme")
	env.Must(t, 401, "GET", "/admin/v1/tenants", a.Editor, nil) // a tenant key is not the admin token
	tenant := env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "globex", "name": "Globex"}).Map(t)
	for _, k := range []string{"id", "slug", "name", "isolation", "status"} {
		if tenant[k] == nil {
			t.Errorf("tenant has no %s: %v", k, tenant)
		}
	}
	env.Must(t, 409, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "globex"})
	env.Must(t, 422, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "Bad Slug"})
	env.Must(t, 422, "POST", "/admin/v1/tenants/globex/keys", apitest.AdminToken, map[string]any{"role": "owner"})
	key := env.Must(t, 201, "POST", "/admin/v1/tenants/globex/keys", apitest.AdminToken, nil).Map(t)
	if key["role"] != "viewer" || key["tenant"] != "globex" {
		t.Errorf("key %v", key)
	}
	list := env.Must(t, 200, "GET", "/admin/v1/tenants", apitest.AdminToken, nil)
	if !strings.Contains(string(list.Body), `"globex"`) || !strings.Contains(string(list.Body), `"acme"`) {
		t.Errorf("list %s", list.Body)
	}
	env.Must(t, 204, "DELETE", "/admin/v1/tenants/globex", apitest.AdminToken, nil)
	env.Must(t, 404, "GET", "/admin/v1/tenants/globex", apitest.AdminToken, nil)
	env.Must(t, 401, "GET", "/v1/accounts", key["key"].(string), nil)

	// Without an admin token the admin API does not exist.
	off := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_ADMIN_TOKEN", ""))
	off.Must(t, 404, "GET", "/admin/v1/tenants", apitest.AdminToken, nil)
}

// Every error is problem+json, and no database text reaches the client.
func TestErrorsAreProblems(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	big := `[` + strings.Repeat(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",`, 220000) + `"x"]`
	cases := []struct {
		name         string
		method, path string
		key          string
		body         any
		header       []string
		status       int
		detail       string
	}{
		{"unknown route", "GET", "/v2/nothing", a.Editor, nil, nil, 404, "no such route"},
		{"wrong method", "PUT", "/v1/accounts", a.Editor, nil, nil, 405, "method not allowed"},
		{"malformed JSON", "POST", "/v1/accounts", a.Editor, `{"provider":`, nil, 400, "truncated JSON"},
		{"unknown field", "POST", "/v1/accounts", a.Editor, `{"provider":"aws","tenant_id":"x"}`, nil, 400, "unknown field"},
		{"wrong type", "POST", "/v1/accounts", a.Editor, `{"provider":1}`, nil, 400, "provider"},
		{"wrong content type", "POST", "/v1/accounts", a.Editor, `provider=aws`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"body over 10 MiB", "POST", "/v1/accounts", a.Editor, big, nil, 413, "10 MiB"},
		{"bad id", "GET", "/v1/accounts/not-a-uuid", a.Editor, nil, nil, 400, "id"},
		{"bad limit", "GET", "/v1/accounts?limit=1001", a.Editor, nil, nil, 400, "limit"},
		{"bad cursor", "GET", "/v1/accounts?cursor=garbage", a.Editor, nil, nil, 400, "cursor"},
		// Parameters the generated wrappers cannot bind are answered in
		// the API's words, not strconv's or uuid's.
		{"limit not a number", "GET", "/v1/accounts?limit=abc", a.Editor, nil, nil, 400, "query parameter limit: must be a whole number"},
		{"id not a UUID", "GET", "/v1/accounts/xyz", a.Editor, nil, nil, 400, "path parameter id: must be a UUID"},
		{"from not a date", "GET", "/v1/costs?from=2026-02-30", a.Editor, nil, nil, 400, "query parameter from: must be a date"},
		// A key given twice is refused, at any depth, naming it.
		{"duplicate key", "POST", "/v1/accounts", a.Editor, `{"provider":"aws","external_id":"1","name":"n","provider":"gcp"}`, nil, 400, `duplicate key "provider"`},
		{"duplicate key in a cost item", "POST", "/v1/costs", a.Editor,
			`[{"account_id":"0190a1b2-0000-7000-8000-000000000001","service":"s","usage_date":"2026-01-01","amount":"1","currency":"USD","amount":"100"}]`,
			nil, 400, `duplicate key "amount" in [0]`},
		{"duplicate key in a budget", "POST", "/v1/budgets", a.Editor, `{"name":"b","amount":"1","currency":"USD","period":"monthly","name":"c"}`, nil, 400, `duplicate key "name"`},
		{"duplicate key in an admin request", "POST", "/admin/v1/tenants", apitest.AdminToken, `{"slug":"dup-key","slug":"other-slug"}`, nil, 400, `duplicate key "slug"`},
		// What the database would refuse with its own words is refused first.
		{"NUL in a tenant name", "POST", "/admin/v1/tenants", apitest.AdminToken, `{"slug":"nul-name","name":"a\u0000b"}`, nil, 422, "name: must not contain control characters"},
		{"a slug taken", "POST", "/admin/v1/tenants", apitest.AdminToken, `{"slug":"acme"}`, nil, 409, "a tenant with slug acme already exists"},
		{"the testing currency", "POST", "/v1/costs", a.Editor,
			`[{"account_id":"0190a1b2-0000-7000-8000-000000000001","service":"s","usage_date":"2026-01-01","amount":"1","currency":"XTS"}]`,
			nil, 422, "currency"},
		{"no currency", "POST", "/v1/costs", a.Editor,
			`[{"account_id":"0190a1b2-0000-7000-8000-000000000001","service":"s","usage_date":"2026-01-01","amount":"1","currency":"XXX"}]`,
			nil, 422, "currency"},
	}
	for _, tc := range cases {
		r := env.Do(t, tc.method, tc.path, tc.key, tc.body, tc.header...)
		if r.Status != tc.status {
			t.Errorf("%s: got %s, want %d", tc.name, r, tc.status)
			continue
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
		p := r.Map(t)
		if p["status"] != float64(tc.status) || p["title"] == "" || !strings.Contains(fmt.Sprint(p["detail"]), tc.detail) {
			t.Errorf("%s: problem %s does not say %q", tc.name, r.Body, tc.detail)
		}
		for _, leak := range []string{"SQLSTATE", "pq:", "pgx", "violates", "relation", "strconv", "unmarshal", "uuid.UUID", "invalid syntax", "_key", "_fkey", "_pkey"} {
			if strings.Contains(problemText(t, p), leak) {
				t.Errorf("%s: body leaks database text %q: %s", tc.name, leak, r.Body)
			}
		}
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	want := map[string]bool{}
	for i := range 25 {
		want[env.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(i)).Map(t)["id"].(string)] = true
	}
	seen := map[string]bool{}
	path, pages := "/v1/accounts?limit=10", 0
	for {
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		env.Must(t, 200, "GET", path, a.Viewer, nil).JSON(t, &page)
		pages++
		for _, it := range page.Items {
			id := it["id"].(string)
			if seen[id] {
				t.Fatalf("%s seen twice", id)
			}
			seen[id] = true
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/accounts?limit=10&cursor=" + *page.NextCursor
	}
	if pages != 3 || len(seen) != len(want) {
		t.Errorf("%d pages, %d accounts; want 3 pages, %d accounts", pages, len(seen), len(want))
	}
	var def struct{ Items []any }
	env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil).JSON(t, &def)
	if len(def.Items) != 25 {
		t.Errorf("default page has %d items", len(def.Items))
	}
}

func TestOperations(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	env.Must(t, 200, "GET", "/healthz", "", nil)
	env.Must(t, 200, "GET", "/readyz", "", nil)
	env.Must(t, 200, "GET", "/v1/accounts", a.Editor, nil, "X-Request-Id", "req-abc")
	metrics := env.Must(t, 200, "GET", "/metrics", "", nil)
	for _, m := range []string{`bulkhead_http_requests_total{method="GET",route="/v1/accounts",status="200"}`, "bulkhead_db_pool_connections", "go_goroutines",
		`bulkhead_build_info{commit="`, `goversion="go1.`} {
		if !strings.Contains(string(metrics.Body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	spec := env.Must(t, 200, "GET", "/openapi.json", "", nil).Map(t)
	if !strings.HasPrefix(fmt.Sprint(spec["openapi"]), "3.") || spec["paths"].(map[string]any)["/v1/accounts"] == nil {
		t.Errorf("openapi.json: %v", spec["openapi"])
	}
	// Each request line carries its request id and, once authenticated, its tenant.
	found := false
	for _, line := range env.Logs.Lines() {
		if line["msg"] == "request" && line["request_id"] == "req-abc" {
			found = true
			if line["tenant_id"] != a.ID.String() || line["status"] != float64(http.StatusOK) {
				t.Errorf("request line %v", line)
			}
		}
	}
	if !found {
		t.Error("no request line with the request id")
	}
	// Migrations behind head: not ready.
	env.DB.Exec(t, `DELETE FROM public.goose_tenant WHERE version_id = (SELECT max(version_id) FROM public.goose_tenant)`)
	r := env.Must(t, 503, "GET", "/readyz", "", nil)
	if !strings.Contains(string(r.Body), "migrate") {
		t.Errorf("readyz: %s", r.Body)
	}
	env.Must(t, 200, "GET", "/healthz", "", nil)
}

// Anyone may ask /readyz: when the database refuses the serving role, the
// answer says so in the API's words, and the database's own — host, port,
// role, database, SQLSTATE — stay in the log.
func TestReadyzSaysNoDatabaseText(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Must(t, 200, "GET", "/readyz", "", nil)
	db := pgx.Identifier{env.DB.Name}.Sanitize()
	env.DB.Exec(t, `REVOKE CONNECT ON DATABASE `+db+` FROM PUBLIC, bulkhead_app`)
	env.DB.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'bulkhead_app'`, env.DB.Name)
	r := env.Must(t, 503, "GET", "/readyz", "", nil)
	u, err := url.Parse(env.DB.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{u.Hostname(), u.Port(), "bulkhead_app", env.DB.Name, "SQLSTATE", "FATAL", "permission denied", "failed to connect"} {
		if strings.Contains(string(r.Body), leak) {
			t.Errorf("/readyz answers %q to anyone: %s", leak, r.Body)
		}
	}
	if !strings.Contains(string(r.Body), "the database does not answer") {
		t.Errorf("/readyz: %s", r.Body)
	}
}

// problemText is the text of problem p that could carry a leak: every
// member but request_id, a random token that may spell anything ("pgx"
// once, in 32 letters).
func problemText(t *testing.T, p map[string]any) string {
	t.Helper()
	q := maps.Clone(p)
	delete(q, "request_id")
	b, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
