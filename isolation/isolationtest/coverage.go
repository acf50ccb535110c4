package isolationtest

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// operation is one tenant API operation of the served OpenAPI document.
type operation struct {
	name   string // "GET /v1/accounts/{id}"
	path   string // "/v1/accounts/{id}"
	re     *regexp.Regexp
	public bool // security: [] — answered without a key
}

// loadSpec reads the tenant operations (paths under /v1/) from the server's
// own /openapi.json, so that an operation added later and not attacked by
// the suite fails it.
func loadSpec(tb testing.TB, env *apitest.Env) []operation {
	tb.Helper()
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	env.Must(tb, 200, "GET", "/openapi.json", "", nil).JSON(tb, &doc)
	var ops []operation
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		parts := strings.Split(path, "/")
		for i, p := range parts {
			if strings.HasPrefix(p, "{") {
				parts[i] = "[^/]+"
			} else {
				parts[i] = regexp.QuoteMeta(p)
			}
		}
		re := regexp.MustCompile("^" + strings.Join(parts, "/") + "$")
		for method, op := range item {
			switch m := strings.ToUpper(method); m {
			case "GET", "POST", "PUT", "PATCH", "DELETE":
				sec, declared := op.(map[string]any)["security"].([]any)
				ops = append(ops, operation{name: m + " " + path, path: path, re: re, public: declared && len(sec) == 0})
			}
		}
	}
	if len(ops) == 0 {
		tb.Fatal("isolationtest: the OpenAPI document has no tenant operation under /v1/")
	}
	// Literal paths before templated ones: /v1/costs/summary is not
	// /v1/costs/{id}.
	slices.SortFunc(ops, func(a, b operation) int {
		return strings.Count(a.name, "{") - strings.Count(b.name, "{")
	})
	return ops
}

// match names the operation a request is for, or "".
func (s *suite) match(method, rawPath string) string {
	u, err := url.Parse(rawPath)
	if err != nil {
		return ""
	}
	for _, op := range s.spec {
		if strings.HasPrefix(op.name, method+" ") && op.re.MatchString(u.Path) {
			return op.name
		}
	}
	return ""
}

// checkCoverage fails for every tenant operation the suite did not attack:
// a new resource extends the suite before it ships.
func (s *suite) checkCoverage(t *testing.T) {
	var missing []string
	for _, op := range s.spec {
		if !s.covered[op.name] {
			missing = append(missing, op.name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the conformance suite does not attack these tenant operations (extend isolation/isolationtest): %s", strings.Join(missing, ", "))
	}
}
