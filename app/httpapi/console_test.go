package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// The console is served by the API's server under /console/, with its
// policy; it is static and needs no key.
func TestConsoleIsServed(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	env.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r := env.Must(t, 301, "GET", "/console", "", nil)
	if r.Header.Get("Location") != "/console/" {
		t.Errorf("GET /console redirects to %q", r.Header.Get("Location"))
	}
	page := env.Must(t, 200, "GET", "/console/budgets", "", nil)
	if !strings.Contains(page.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") || !strings.Contains(string(page.Body), "/console/assets/console.js") {
		t.Errorf("GET /console/budgets: %v %.200s", page.Header, page.Body)
	}
	env.Must(t, 200, "GET", "/console/assets/console.js", "", nil)
	env.Must(t, 404, "GET", "/console/assets/missing.js", "", nil)
	env.Must(t, 405, "POST", "/console/", "", "{}")
}
