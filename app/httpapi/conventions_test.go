package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// An account carries a strong ETag; If-None-Match answers 304, and If-Match
// guards PATCH and DELETE in the write itself: a stale or foreign tag is a
// 412 and changes nothing, and of writers racing with one tag exactly one
// wins. Another tenant's account stays a 404 whatever the precondition.
func TestETagAndIfMatch(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "acme"), env.Tenant(t, "umbrella")

	created := env.Must(t, 201, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "aws", "external_id": "1", "name": "prod"})
	id := created.Map(t)["id"].(string)
	path := "/v1/accounts/" + id
	e0 := created.Header.Get("ETag")
	if !strings.HasPrefix(e0, `"`) || !strings.HasSuffix(e0, `"`) || len(e0) < 3 {
		t.Fatalf("POST: ETag %q, want a strong entity tag", e0)
	}
	got := env.Must(t, 200, "GET", path, a.Viewer, nil)
	if got.Header.Get("ETag") != e0 {
		t.Fatalf("GET: ETag %q, want the creation's %q", got.Header.Get("ETag"), e0)
	}

	for _, inm := range []string{e0, "W/" + e0, `"x", ` + e0, "*"} {
		r := env.Must(t, 304, "GET", path, a.Viewer, nil, "If-None-Match", inm)
		if len(r.Body) != 0 || r.Header.Get("ETag") != e0 {
			t.Errorf("If-None-Match %s: body %q, ETag %q", inm, r.Body, r.Header.Get("ETag"))
		}
	}
	env.Must(t, 200, "GET", path, a.Viewer, nil, "If-None-Match", `"not-it"`)

	// Stale, weak, made-up: 412, problem+json, nothing written.
	for _, im := range []string{`"0"`, "W/" + e0, `"zz-not-ours"`, "garbage"} {
		r := env.Must(t, 412, "PATCH", path, a.Editor, map[string]any{"name": "renamed"}, "If-Match", im)
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" || !strings.Contains(string(r.Body), "ETag") {
			t.Errorf("If-Match %s: %s %s", im, ct, r.Body)
		}
	}
	if n := env.Must(t, 200, "GET", path, a.Viewer, nil).Map(t)["name"]; n != "prod" {
		t.Fatalf("after refused PATCHes the name is %v", n)
	}

	upd := env.Must(t, 200, "PATCH", path, a.Editor, map[string]any{"name": "one"}, "If-Match", `"0", `+e0)
	e1 := upd.Header.Get("ETag")
	if e1 == "" || e1 == e0 {
		t.Fatalf("PATCH: ETag %q, want a new one (was %q)", e1, e0)
	}
	if g := env.Must(t, 200, "GET", path, a.Viewer, nil).Header.Get("ETag"); g != e1 {
		t.Fatalf("GET after PATCH: ETag %q, PATCH said %q", g, e1)
	}
	// The lost update: a writer still holding e0.
	env.Must(t, 412, "PATCH", path, a.Editor, map[string]any{"name": "stale"}, "If-Match", e0)
	env.Must(t, 304, "GET", path, a.Viewer, nil, "If-None-Match", e1)
	env.Must(t, 200, "GET", path, a.Viewer, nil, "If-None-Match", e0)

	// Racing writers with the same tag: one wins, the others see 412.
	const racers = 6
	statuses := make([]int, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = env.Do(t, "PATCH", path, a.Editor, map[string]any{"name": fmt.Sprint("racer ", i)}, "If-Match", e1).Status
		}()
	}
	wg.Wait()
	won := 0
	for _, s := range statuses {
		switch s {
		case 200:
			won++
		case 412:
		default:
			t.Errorf("racing PATCH: %d", s)
		}
	}
	if won != 1 {
		t.Fatalf("racing PATCHes with one If-Match: %d won (%v), want exactly 1", won, statuses)
	}
	cur := env.Must(t, 200, "GET", path, a.Viewer, nil).Header.Get("ETag")

	// Another tenant's account, or none: 404, never 412 — a precondition
	// tells nothing of what exists elsewhere.
	for _, im := range []string{cur, `"0"`, "*"} {
		env.Must(t, 404, "PATCH", path, b.Editor, map[string]any{"name": "x"}, "If-Match", im)
		env.Must(t, 404, "DELETE", path, b.Editor, nil, "If-Match", im)
		env.Must(t, 404, "PATCH", "/v1/accounts/00000000-0000-0000-0000-000000000001", a.Editor, map[string]any{"name": "x"}, "If-Match", im)
	}
	env.Must(t, 404, "GET", path, b.Viewer, nil, "If-None-Match", "*")

	env.Must(t, 412, "DELETE", path, a.Editor, nil, "If-Match", e1)
	env.Must(t, 204, "DELETE", path, a.Editor, nil, "If-Match", cur)
	env.Must(t, 404, "GET", path, a.Viewer, nil)
}

// HEAD answers every GET route of the document with the GET's status and
// headers and no body — authentication and rate limits included.
func TestHEADForEveryGET(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	account := env.Must(t, 201, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "aws", "external_id": "1", "name": "prod"}).Map(t)["id"].(string)
	budget := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "b", "amount": "10", "currency": "USD", "period": "monthly"}).Map(t)["id"].(string)
	imp := env.Must(t, 201, "POST", "/v1/costs", a.Editor, fixture(t, "focus-1.0-aws.csv"), csvType...).Map(t)["import_id"].(string)
	keyID := env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, nil).Map(t)["id"].(string)

	spec, err := httpapi.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"/v1/accounts/": account, "/v1/budgets/": budget, "/v1/costs/imports/": imp}
	checked := 0
	for path, item := range spec.Paths.Map() {
		if item.Get == nil {
			continue
		}
		url := path
		for prefix, id := range ids {
			url = strings.Replace(url, prefix+"{id}", prefix+id, 1)
		}
		url = strings.ReplaceAll(url, "{slug}", "acme")
		url = strings.ReplaceAll(url, "{keyId}", keyID)
		if strings.Contains(url, "{") {
			t.Fatalf("no value for the parameter of %s", path)
		}
		if path == "/v1/consolidated/costs/summary" {
			url += "?tenants=acme"
		}
		token := a.Viewer
		if strings.HasPrefix(path, "/admin/") {
			token = apitest.AdminToken
		}
		for _, tok := range []string{token, ""} {
			get := env.Do(t, "GET", url, tok, nil)
			head := env.Do(t, "HEAD", url, tok, nil)
			if head.Status != get.Status || len(head.Body) != 0 {
				t.Errorf("HEAD %s (token %t): %d with %d bytes; GET: %d", url, tok != "", head.Status, len(head.Body), get.Status)
			}
			for _, h := range []string{"Content-Type", "ETag", "RateLimit-Policy", "WWW-Authenticate"} {
				if head.Header.Get(h) != get.Header.Get(h) {
					t.Errorf("HEAD %s: %s %q; GET: %q", url, h, head.Header.Get(h), get.Header.Get(h))
				}
			}
		}
		checked++
	}
	if checked < 15 {
		t.Fatalf("only %d GET routes checked", checked)
	}
	// The console's static files, beside the document's routes.
	if r := env.Do(t, "HEAD", "/console/", "", nil); r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("HEAD /console/: %d with %d bytes", r.Status, len(r.Body))
	}
	// A route without GET stays 405.
	if r := env.Do(t, "HEAD", "/admin/v1/tenants/acme/suspend", apitest.AdminToken, nil); r.Status != 405 {
		t.Errorf("HEAD on a POST-only route: %d, want 405", r.Status)
	}
}

// Large answers are gzipped for a client that accepts it, small ones and
// those with a version ETag are not, and /metrics is compressed once.
func TestGzip(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	account := env.Must(t, 201, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "aws", "external_id": "1", "name": "prod"}).Map(t)["id"].(string)

	plain := env.Must(t, 200, "GET", "/openapi.json", "", nil)
	zipped := env.Must(t, 200, "GET", "/openapi.json", "", nil, "Accept-Encoding", "gzip")
	if zipped.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(zipped.Header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("GET /openapi.json, gzip accepted: Content-Encoding %q, Vary %q", zipped.Header.Get("Content-Encoding"), zipped.Header.Get("Vary"))
	}
	if got := gunzip(t, zipped.Body); !bytes.Equal(got, plain.Body) {
		t.Fatalf("gunzipped document differs from the plain one (%d vs %d bytes)", len(got), len(plain.Body))
	}
	if len(zipped.Body) >= len(plain.Body) {
		t.Errorf("gzip: %d bytes, plain %d", len(zipped.Body), len(plain.Body))
	}

	for _, path := range []string{"/healthz", "/v1/accounts/" + account} {
		r := env.Must(t, 200, "GET", path, a.Viewer, nil, "Accept-Encoding", "gzip")
		if r.Header.Get("Content-Encoding") != "" {
			t.Errorf("GET %s: Content-Encoding %q, want none", path, r.Header.Get("Content-Encoding"))
		}
	}
	// A problem answer stays readable.
	if r := env.Must(t, 404, "GET", "/v1/accounts/00000000-0000-0000-0000-000000000001", a.Viewer, nil, "Accept-Encoding", "gzip"); !strings.Contains(string(r.Body), "no such resource") {
		t.Errorf("404 with gzip accepted: %q", r.Body)
	}

	m := env.Must(t, 200, "GET", "/metrics", "", nil, "Accept-Encoding", "gzip")
	text := m.Body
	if m.Header.Get("Content-Encoding") == "gzip" {
		text = gunzip(t, m.Body)
	}
	if !bytes.Contains(text, []byte("# HELP ")) {
		t.Fatalf("/metrics with gzip accepted is not the text format once decoded: %.100q", text)
	}
	// HEAD of a gzipped answer: the same headers, no body.
	if r := env.Do(t, "HEAD", "/openapi.json", "", nil, "Accept-Encoding", "gzip"); r.Status != 200 || len(r.Body) != 0 || r.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("HEAD /openapi.json with gzip: %d, %d bytes, Content-Encoding %q", r.Status, len(r.Body), r.Header.Get("Content-Encoding"))
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// Every 201 says where what it made lives, and that address answers.
func TestLocationOnEvery201(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	r := env.Must(t, 201, "POST", "/admin/v1/tenants", apitest.AdminToken, map[string]any{"slug": "acme"})
	follow(t, env, r, "/admin/v1/tenants/acme", apitest.AdminToken)
	r = env.Must(t, 201, "POST", "/admin/v1/tenants/acme/keys", apitest.AdminToken, map[string]any{"role": "editor"})
	key := r.Map(t)
	if loc := r.Header.Get("Location"); loc != "/admin/v1/keys/"+key["id"].(string) {
		t.Errorf("key: Location %q", loc)
	}
	editor := key["key"].(string)

	r = env.Must(t, 201, "POST", "/v1/accounts", editor, map[string]any{"provider": "aws", "external_id": "1", "name": "prod"})
	follow(t, env, r, "/v1/accounts/"+r.Map(t)["id"].(string), editor)
	account := r.Map(t)["id"].(string)
	r = env.Must(t, 201, "POST", "/v1/budgets", editor, map[string]any{"name": "b", "amount": "10", "currency": "USD", "period": "monthly"})
	follow(t, env, r, "/v1/budgets/"+r.Map(t)["id"].(string), editor)
	r = env.Must(t, 201, "POST", "/v1/costs", editor, []map[string]any{{"account_id": account, "service": "s", "usage_date": "2026-01-01", "amount": "1", "currency": "USD"}})
	follow(t, env, r, "/v1/costs", editor)
	r = env.Must(t, 201, "POST", "/v1/costs", editor, fixture(t, "focus-1.0-aws.csv"), csvType...)
	follow(t, env, r, "/v1/costs/imports/"+r.Map(t)["import_id"].(string), editor)
}

func follow(t *testing.T, env *apitest.Env, r *apitest.Response, want, token string) {
	t.Helper()
	loc := r.Header.Get("Location")
	if loc != want {
		t.Fatalf("Location %q, want %q", loc, want)
	}
	if g := env.Do(t, http.MethodGet, loc, token, nil); g.Status != 200 {
		t.Errorf("GET %s (the Location): %s", loc, g)
	}
}
