package console_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/browser"
)

// The operator console lists every tenant with its strategy, placement,
// status and migration version as the admin API has them, suspends and
// resumes, and shows verify's findings and (where the server has them) the
// busiest tenants.
func testOperatorConsole(t *testing.T, b *browser.Browser) {
	// Counters reach the control plane soon after the requests (the
	// default waits 10s).
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_LIMITS__STATS__FLUSH_INTERVAL", "200ms"))
	acme := env.Tenant(t, "acme")
	env.Tenant(t, "globex")
	// acme makes requests before the operator looks; globex makes none.
	const acmeRequests = 5
	for range acmeRequests {
		env.Must(t, 200, "GET", "/v1/accounts", acme.Viewer, nil)
	}
	p := open(t, b, env)

	// A wrong token is refused and not kept.
	p.do("wrong token", chromedp.Navigate(env.URL+"/console/admin"), chromedp.WaitVisible(chromedp.ID("secret")),
		chromedp.SendKeys(chromedp.ID("secret"), "not-the-admin-token-not-the-admin-token\r"),
		chromedp.WaitVisible(chromedp.CSS(".signin-problem .msg-error")))
	if eval[string](p, `sessionStorage.getItem('bulkhead.console.admin') ?? ''`) != "" {
		t.Error("a refused token is kept")
	}

	p.signIn("/console/admin", apitest.AdminToken)
	var list struct {
		Items []struct {
			Slug, Isolation, Status string
			Version                 int64
		}
	}
	env.Must(t, 200, "GET", "/admin/v1/tenants", apitest.AdminToken, nil).JSON(t, &list)
	rows := eval[[][]string](p, `[...document.querySelectorAll('tr[data-tenant]')].map((r) => [...r.children].map((c) => c.textContent.trim()))`)
	if len(rows) != len(list.Items) {
		t.Fatalf("the console lists %d tenants, the API %d", len(rows), len(list.Items))
	}
	for i, it := range list.Items {
		r := rows[i]
		if r[0] != it.Slug || r[2] != it.Isolation || r[4] != it.Status || r[5] != fmt.Sprint(it.Version) {
			t.Errorf("row %q; the API says %+v", r, it)
		}
	}

	// A tenant's console open in another tab.
	tenantTab := open(t, b, env)
	tenantTab.signIn("/console/budgets", acme.Viewer)

	// Suspend, confirmed; the tenant's key is refused, in its console too;
	// resume.
	for _, act := range []struct{ verb, status string }{{"suspend", "suspended"}, {"resume", "active"}} {
		p.do(act.verb,
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label^="%s tenant acme"]`, strings.ToUpper(act.verb[:1])+act.verb[1:]))),
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Confirm: %s tenant acme"]`, act.verb))),
			chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`tr[data-tenant="acme"][data-status="%s"]`, act.status))))
		got := env.Must(t, 200, "GET", "/admin/v1/tenants/acme", apitest.AdminToken, nil).Map(t)["status"]
		if got != act.status {
			t.Errorf("after %s the API says %v", act.verb, got)
		}
		tenantTab.visit("/console/budgets")
		if refused := strings.Contains(tenantTab.text(), "suspended"); refused != (act.status == "suspended") {
			t.Errorf("after %s the tenant's console says %q", act.verb, tenantTab.text())
		}
		if act.status == "suspended" {
			env.Must(t, 403, "GET", "/v1/accounts", acme.Viewer, nil)
		}
	}
	env.Must(t, 200, "GET", "/v1/accounts", acme.Viewer, nil)

	// Verify: what the admin API reports.
	p.do("verify", chromedp.WaitReady(chromedp.CSS(`section[aria-labelledby="verify-h"]:is([data-state="ready"], [data-state="error"])`)))
	var report struct {
		Items    []map[string]any
		Critical int
	}
	env.Must(t, 200, "GET", "/admin/v1/verify", apitest.AdminToken, nil).JSON(t, &report)
	want := fmt.Sprintf("%d findings, %d critical", len(report.Items), report.Critical)
	if !strings.Contains(p.text(), want) {
		t.Errorf("verify: the console does not say %q", want)
	}
	// The busiest tenants: shown where the server reports them, else said so.
	spec := env.Must(t, 200, "GET", "/openapi.json", "", nil).Map(t)
	_, hasStats := spec["paths"].(map[string]any)["/admin/v1/tenants/stats"]
	p.do("stats", chromedp.WaitReady(chromedp.CSS(`section[aria-labelledby="stats-h"]:not([data-state="loading"])`)))
	state := eval[string](p, `document.querySelector('section[aria-labelledby="stats-h"]').dataset.state`)
	if hasStats && state != "ready" || !hasStats && state != "unavailable" {
		t.Errorf("busiest tenants: state %s, server has the endpoint: %t", state, hasStats)
	}
	if hasStats {
		// acme is listed with at least the requests it made, as the admin
		// API counts them.
		busy := eval[map[string]string](p, `Object.fromEntries([...document.querySelectorAll('tr[data-busy]')].map((r) => [r.dataset.busy, r.dataset.requests]))`)
		var n int
		if _, err := fmt.Sscan(busy["acme"], &n); err != nil || n < acmeRequests {
			t.Errorf("busiest tenants: %v; want acme with at least %d requests", busy, acmeRequests)
		}
		var stats struct{ Items []struct{ Tenant string } }
		env.Must(t, 200, "GET", "/admin/v1/tenants/stats", apitest.AdminToken, nil).JSON(t, &stats)
		if len(stats.Items) == 0 || len(busy) == 0 {
			t.Errorf("busiest tenants: the console lists %v, the API %+v", busy, stats.Items)
		}
	}
	p.clean()
	p.shot("console-operator.png")
}
