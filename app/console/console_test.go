package console

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The embedded build is the build of the sources as they are: build.json,
// written by every build, names the hash of each source and each output;
// here the sources on disk and the files embedded must match it. A source
// changed without `make console`, or a built file edited by hand, fails
// here without npm. (`make console/check` goes further where npm is: it
// rebuilds from scratch and compares the bytes.)
func TestBuildIsCurrent(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("build.json")
	if err != nil {
		t.Fatalf("build.json: %v (run make console)", err)
	}
	var manifest struct {
		Sources map[string]string `json:"sources"`
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatalf("build.json: %v", err)
	}

	sources := map[string]string{}
	for _, top := range []string{"build.mjs", "icon.svg", "index.html", "package-lock.json", "package.json", "src"} {
		err := filepath.WalkDir(filepath.Join("web", top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			rel, _ := filepath.Rel("web", p)
			sources[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	compare(t, "source app/console/web/", sources, manifest.Sources)

	outputs := map[string]string{}
	err = fs.WalkDir(dist, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := dist.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		outputs[strings.TrimPrefix(p, "dist/")] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "built app/console/dist/", outputs, manifest.Outputs)
}

func compare(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for name, sum := range got {
		switch w, ok := want[name]; {
		case !ok:
			t.Errorf("%s%s is not in build.json: run make console and commit dist/ and build.json", what, name)
		case w != sum:
			t.Errorf("%s%s differs from the last build: run make console and commit dist/ and build.json", what, name)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s%s is in build.json but missing: run make console", what, name)
		}
	}
}

func serve(t *testing.T, h http.Handler, method, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHandler(t *testing.T) {
	t.Parallel()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	page := serve(t, h, "GET", "/console/")
	if page.Code != 200 || !strings.Contains(page.Body.String(), `<script type="module" src="/console/assets/console.js">`) {
		t.Fatalf("GET /console/: %d %s", page.Code, page.Body)
	}
	// Every path the app routes gets the page; the app decides what it shows.
	for _, p := range []string{"/console/costs", "/console/budgets/0190c8e2-7a4b-7c3d-8e5f-0123456789ab", "/console/admin"} {
		if w := serve(t, h, "GET", p); w.Code != 200 || w.Body.String() != page.Body.String() {
			t.Errorf("GET %s: %d, want the page", p, w.Code)
		}
	}
	for path, ct := range map[string]string{
		"/console/assets/console.js":  "text/javascript; charset=utf-8",
		"/console/assets/console.css": "text/css; charset=utf-8",
		"/console/assets/icon.svg":    "image/svg+xml",
	} {
		w := serve(t, h, "GET", path)
		if w.Code != 200 || w.Header().Get("Content-Type") != ct || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		etag := w.Header().Get("ETag")
		if again := serve(t, h, "GET", path, "If-None-Match", etag); etag == "" || again.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: %d, want 304", path, etag, again.Code)
		}
	}
	// A missing file is a 404, never the page: a script tag must not get HTML.
	for _, p := range []string{"/console/assets/nope.js", "/console/favicon.ico", "/console/assets/../../go.mod", "/console/assets/"} {
		if w := serve(t, h, "GET", p); w.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
	if w := serve(t, h, "POST", "/console/"); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /console/: %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
	if w := serve(t, h, "HEAD", "/console/costs"); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
}

// Every answer, the 404s and 405s too, carries the policy and the headers
// that keep the console from being framed, sniffed or leaking its URL.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range [][2]string{{"GET", "/console/"}, {"GET", "/console/assets/console.js"}, {"GET", "/console/nope.js"}, {"PUT", "/console/"}} {
		w := serve(t, h, req[0], req[1])
		csp := w.Header().Get("Content-Security-Policy")
		directives := map[string]string{}
		for _, d := range strings.Split(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		for name, want := range map[string]string{
			"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "connect-src": "'self'",
			"frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'",
			"require-trusted-types-for": "'script'",
		} {
			if directives[name] != want {
				t.Errorf("%s %s: CSP %s is %q, want %q", req[0], req[1], name, directives[name], want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") || strings.Contains(csp, "*") {
			t.Errorf("%s %s: CSP allows more than this origin: %s", req[0], req[1], csp)
		}
		for name, want := range map[string]string{
			"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
			"Cross-Origin-Opener-Policy": "same-origin",
		} {
			if got := w.Header().Get(name); got != want {
				t.Errorf("%s %s: %s %q, want %q", req[0], req[1], name, got, want)
			}
		}
	}
}

// The built page itself has nothing the policy would refuse: no inline
// script or style, nothing from another origin.
func TestPageHasNothingInline(t *testing.T) {
	t.Parallel()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	page := serve(t, h, "GET", "/console/").Body.String()
	for _, bad := range []string{"style=", "<style", "javascript:", "http://", "https://", "onload=", "onclick="} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	scripts := strings.Count(page, "<script")
	if scripts != 1 || !strings.Contains(page, `<script type="module" src="/console/assets/`) {
		t.Errorf("index.html: want one external module script, got %d script tags", scripts)
	}
	css := serve(t, h, "GET", "/console/assets/console.css").Body.String()
	for _, bad := range []string{"@import", "url(http", "url(//"} {
		if strings.Contains(css, bad) {
			t.Errorf("console.css contains %q: it must not load anything else", bad)
		}
	}
	js := serve(t, h, "GET", "/console/assets/console.js").Body.String()
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("console.js uses %s", bad)
		}
	}
	if !slices.Contains(strings.Fields(js[:200]), "uPlot") {
		t.Errorf("console.js does not credit uPlot in its banner")
	}
}

// Signing in with identity providers adds exactly their origins to
// connect-src, and nothing else anywhere; anything but a bare origin is
// refused, so no configuration can widen the policy with a wildcard, a
// path or a directive of its own.
func TestPolicyForSignIn(t *testing.T) {
	t.Parallel()
	h, err := New("https://login.example.com", "http://127.0.0.1:5556")
	if err != nil {
		t.Fatal(err)
	}
	csp := serve(t, h, "GET", "/console/").Header().Get("Content-Security-Policy")
	want := strings.Replace(CSP, "connect-src 'self';", "connect-src 'self' https://login.example.com http://127.0.0.1:5556;", 1)
	if csp != want || csp == CSP {
		t.Errorf("policy with sign-in:\n%s\nwant\n%s", csp, want)
	}
	for _, bad := range []string{"https://login.example.com/", "https://*.example.com", "https://x.example.com; script-src *",
		"javascript://x", "https://u@x.example.com", "login.example.com", "'unsafe-inline'", "https://x.example.com/path"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted it as an origin", bad)
		}
	}
}
