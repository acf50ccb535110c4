package console_test

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/browser"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// step bounds every browser action: generous for a busy machine, and a
// failure (with a screenshot) rather than a hang.
const step = 3 * time.Minute

// envScreenshots names a directory to write the README's screenshots to
// (make console/screenshots); without it they go to the test's TempDir.
const envScreenshots = "BULKHEAD_CONSOLE_SCREENSHOTS"

// envArtifacts names where a failed test leaves its screenshot and the
// page's console; tmp/test-artifacts/console of the repository by default.
const envArtifacts = "BULKHEAD_TEST_ARTIFACTS"

// page is one browser tab on a test server.
type page struct {
	t   *testing.T
	env *apitest.Env
	tab *browser.Tab
}

// TestConsole drives the console in one headless Chromium: each subtest
// gets a tab in a browser context of its own (no storage shared with any
// other) on a server of its own. The browser closes when all are done.
func TestConsole(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := browser.Start(ctx, filepath.Join(t.TempDir(), "chromium"), 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, b *browser.Browser)
	}{
		{"DashboardTotalsMatchTheAPI", testDashboardTotalsMatchTheAPI},
		{"UploadShowsProgressAndLands", testUploadShowsProgressAndLands},
		{"FOCUSUploadShowsIngestProgress", testFOCUSUploadShowsIngestProgress},
		{"ViewerSeesNoUploadButton", testViewerSeesNoUploadButton},
		{"ShowsOnlyTheKeysTenant", testShowsOnlyTheKeysTenant},
		{"Budgets", testBudgets},
		{"OperatorConsole", testOperatorConsole},
		{"Units", testUnits},
		{"SignInWithIdentityProvider", testSignInWithIdentityProvider},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, b)
		})
	}
}

// open opens a tab on env. When the test fails, the page's screenshot and
// console are kept (see envArtifacts).
func open(t *testing.T, b *browser.Browser, env *apitest.Env) *page {
	t.Helper()
	tab, err := b.Tab(step)
	if err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, env: env, tab: tab}
	t.Cleanup(func() {
		if t.Failed() {
			p.keep()
		}
		tab.Close()
	})
	return p
}

// keep writes the failed test's screenshot and console log where a person
// (or CI) can find them, and logs where.
func (p *page) keep() {
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		dir = filepath.Join("..", "..", "tmp", "test-artifacts", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Logf("keep artifacts: %v", err)
		return
	}
	name := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(p.t.Name(), "_")
	base, _ := filepath.Abs(filepath.Join(dir, name))
	if png, err := p.tab.Screenshot(10 * time.Second); err == nil {
		_ = os.WriteFile(base+".png", png, 0o644)
	}
	url, _ := browser.Run(p.tab, 5*time.Second, chromedp.Location())
	log := fmt.Sprintf("url: %s\n%s\n", url, strings.Join(p.tab.Console(), "\n"))
	_ = os.WriteFile(base+".log", []byte(log), 0o644)
	p.t.Logf("screenshot and console of the failed page: %s.png, %s.log", base, base)
}

// do runs browser actions, failing the test on error.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := p.tab.Do(step, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *page, expr string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	v, err := browser.Run(p.tab, step, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// ready waits until the console says its view is drawn.
func (p *page) ready(what string) {
	p.t.Helper()
	p.do(what, chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)))
}

// settled waits until everything the view asked for has arrived.
func (p *page) settled(what string) {
	p.t.Helper()
	p.do(what, chromedp.WaitReady(chromedp.CSS(`body[data-settled="true"]`)))
}

// visit loads a console URL (a full page load) and waits until its view is
// drawn and all it asked for has arrived.
func (p *page) visit(path string) {
	p.t.Helper()
	p.do("visit "+path, chromedp.Navigate(p.env.URL+path))
	p.ready("visit " + path)
	p.settled("visit " + path)
}

// signIn loads the console at path and signs in with key, typing it and
// pressing Enter, as a person would.
func (p *page) signIn(path, secret string) {
	p.t.Helper()
	p.do("sign in at "+path,
		chromedp.Navigate(p.env.URL+path),
		chromedp.WaitVisible(chromedp.ID("secret")),
		chromedp.SendKeys(chromedp.ID("secret"), secret+"\r"),
	)
	p.ready("after signing in at " + path)
	p.settled("after signing in at " + path)
}

// text is the page's visible text.
func (p *page) text() string {
	p.t.Helper()
	return eval[string](p, `document.body.innerText`)
}

// clean fails the test on a CSP violation or a script error on the page.
func (p *page) clean() {
	p.t.Helper()
	v, err := p.tab.CSPViolations(step)
	if err != nil {
		p.t.Fatalf("read CSP violations: %v", err)
	}
	if len(v) > 0 {
		p.t.Errorf("Content-Security-Policy violations: %q", v)
	}
	for _, line := range p.tab.Console() {
		if strings.HasPrefix(line, "exception") || strings.Contains(line, "Refused to") || strings.HasPrefix(line, "console.error") {
			p.t.Errorf("page: %s", line)
		}
	}
}

// shot writes a screenshot for the README (envScreenshots) or the test's
// TempDir, and checks that it is a PNG.
func (p *page) shot(name string) {
	p.t.Helper()
	dir := os.Getenv(envScreenshots)
	if dir == "" {
		dir = p.t.TempDir()
	}
	png, err := p.tab.Screenshot(step)
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG") {
		p.t.Fatalf("screenshot %s is not a PNG", name)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// rat parses an exact decimal.
func rat(t *testing.T, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(strings.ReplaceAll(s, ",", ""))
	if !ok {
		t.Fatalf("not a decimal: %q", s)
	}
	return r
}

type total struct{ Key, Amount, Currency string }

// summary is GET /v1/costs/summary?query.
func summary(t *testing.T, env *apitest.Env, key, query string) []total {
	t.Helper()
	var s struct{ Items []total }
	env.Must(t, 200, "GET", "/v1/costs/summary?"+query, key, nil).JSON(t, &s)
	return s.Items
}

// sums adds items up per currency (and per key, as "key currency"), exactly.
func sums(t *testing.T, items []total) (perCurrency, perKey map[string]*big.Rat) {
	t.Helper()
	perCurrency, perKey = map[string]*big.Rat{}, map[string]*big.Rat{}
	for _, it := range items {
		for m, k := range map[*map[string]*big.Rat]string{&perCurrency: it.Currency, &perKey: it.Key + " " + it.Currency} {
			if (*m)[k] == nil {
				(*m)[k] = new(big.Rat)
			}
			(*m)[k].Add((*m)[k], rat(t, it.Amount))
		}
	}
	return perCurrency, perKey
}

func newAccount(t *testing.T, env *apitest.Env, key, name string) string {
	t.Helper()
	return env.Must(t, 201, "POST", "/v1/accounts", key, map[string]any{
		"provider": "aws", "external_id": fmt.Sprintf("%012d", len(name)*7919%1000000), "name": name,
	}).Map(t)["id"].(string)
}

// ingest posts CSV cost rows.
func ingest(t *testing.T, env *apitest.Env, key string, rows ...string) {
	t.Helper()
	body := "account_id,service,usage_date,amount,currency\n" + strings.Join(rows, "\n") + "\n"
	env.Must(t, 201, "POST", "/v1/costs", key, body, "Content-Type", "text/csv")
}
