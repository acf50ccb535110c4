package console_test

import (
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/browser"
)

// costsIn fills tenant key with cost rows from 2025-02-15 to 2025-03-14:
// five services over two accounts, amounts with every decimal place used,
// a credit (negative), a micro-charge and a second currency.
func costsIn(t *testing.T, env *apitest.Env, key string) (prod, analytics string) {
	t.Helper()
	prod, analytics = newAccount(t, env, key, "production"), newAccount(t, env, key, "analytics")
	var rows []string
	for d := 0; d < 28; d++ {
		day := fmt.Sprintf("2025-%s", map[bool]string{true: fmt.Sprintf("02-%02d", 15+d), false: fmt.Sprintf("03-%02d", d-13)}[d < 14])
		rows = append(rows,
			fmt.Sprintf("%s,AmazonEC2,%s,%d.%06d,USD", prod, day, 100+d, 123457*(d+1)%1000000),
			fmt.Sprintf("%s,AmazonS3,%s,%d.%06d,USD", prod, day, 20+d%5, 999999-d),
			fmt.Sprintf("%s,AmazonRDS,%s,0.000001,USD", prod, day),
			fmt.Sprintf("%s,Credits,%s,-1.500000,USD", prod, day),
			fmt.Sprintf("%s,BigQuery,%s,%d.%06d,USD", analytics, day, 40+d%7, 314159*(d+3)%1000000),
			fmt.Sprintf("%s,BigQuery,%s,%d.%06d,EUR", analytics, day, 3+d%2, 271828*(d+1)%1000000),
		)
	}
	ingest(t, env, key, rows...)
	return prod, analytics
}

// entries reads [attr, data-amount, text] of the elements matching sel.
func entries(p *page, sel, attr string) [][]string {
	p.t.Helper()
	return eval[[][]string](p, fmt.Sprintf(`[...document.querySelectorAll(%q)].map((e) => [e.getAttribute(%q) ?? e.closest('[data-key]')?.dataset.key ?? '', e.dataset.amount, e.textContent.trim()])`, sel, attr))
}

// checkAmounts compares what the page shows (exact data-amount and the text
// people read) with want, keyed the same way.
func checkAmounts(t *testing.T, what string, got [][]string, want map[string]*big.Rat) {
	t.Helper()
	seen := map[string]bool{}
	for _, g := range got {
		key, amount, text := g[0], g[1], g[2]
		w, ok := want[key]
		if !ok {
			t.Errorf("%s: the page shows %q (%s), which the API does not", what, key, amount)
			continue
		}
		seen[key] = true
		if rat(t, amount).Cmp(w) != 0 || rat(t, text).Cmp(w) != 0 {
			t.Errorf("%s %q: the page shows %s (%q), the API's summary adds up to %s", what, key, amount, text, w.FloatString(12))
		}
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("%s: the page does not show %q", what, key)
		}
	}
}

// withCurrency keeps the "key currency" entries of cur, keyed by key.
func withCurrency(m map[string]*big.Rat, cur string) map[string]*big.Rat {
	out := map[string]*big.Rat{}
	for k, v := range m {
		if key, c, _ := strings.Cut(k, " "); c == cur {
			out[key] = v
		}
	}
	return out
}

// The chart's exact totals are the API's summary, to the last decimal:
// per currency, per stacked key, per day and per month, stacked by service,
// by account and by nothing.
func testDashboardTotalsMatchTheAPI(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	costsIn(t, env, a.Editor)
	p := open(t, b, env)
	const rng = "from=2025-03-01&to=2025-03-14"

	p.signIn("/console/costs?"+rng+"&by=service", a.Editor)
	// The key is kept in this tab's session storage only: not in the URL,
	// not in local storage, not in a cookie.
	where := eval[[]string](p, `[location.href, String(localStorage.length), document.cookie, sessionStorage.getItem('bulkhead.console.key') ?? '']`)
	if strings.Contains(where[0], a.Editor) || where[1] != "0" || where[2] != "" || where[3] != a.Editor {
		t.Errorf("the key is kept wrongly: url %s, localStorage %s items, cookie %q, sessionStorage %t", where[0], where[1], where[2], where[3] == a.Editor)
	}

	days := summary(t, env, a.Viewer, rng+"&group_by=day")
	perCurrency, perDay := sums(t, days)
	_, perService := sums(t, summary(t, env, a.Viewer, rng+"&group_by=service"))
	checkAmounts(t, "total", entries(p, "[data-total-currency]", "data-total-currency"), perCurrency)
	checkAmounts(t, "service", entries(p, ".key-totals td[data-amount]", "data-key"), withCurrency(perService, "USD"))
	checkAmounts(t, "day", entries(p, "[data-bucket-total]", "data-bucket-total"), withCurrency(perDay, "USD"))
	if n := eval[int](p, `document.querySelectorAll('.chart canvas').length`); n == 0 {
		t.Error("no chart is drawn")
	}

	// Stacked by account: the same totals, split by account.
	p.do("stack by account", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('c-by'); s.value = 'account'; s.dispatchEvent(new Event('change')); })()`))
	p.ready("stacked by account")
	p.settled("stacked by account")
	_, perAccount := sums(t, summary(t, env, a.Viewer, rng+"&group_by=account"))
	checkAmounts(t, "account", entries(p, ".key-totals td[data-amount]", "data-key"), withCurrency(perAccount, "USD"))
	checkAmounts(t, "total by account", entries(p, "[data-total-currency]", "data-total-currency"), perCurrency)
	if !strings.Contains(p.text(), "production") {
		t.Error("accounts are not shown by name")
	}
	// EUR, when asked for.
	p.visit("/console/costs?" + rng + "&by=service&currency=EUR")
	checkAmounts(t, "EUR service", entries(p, ".key-totals td[data-amount]", "data-key"), withCurrency(perService, "EUR"))

	// Monthly, not stacked: the months are the days added up exactly.
	p.visit("/console/costs?from=2025-02-15&to=2025-03-14&interval=month&by=none")
	_, perDay2 := sums(t, summary(t, env, a.Viewer, "from=2025-02-15&to=2025-03-14&group_by=day"))
	months := map[string]*big.Rat{}
	for k, v := range withCurrency(perDay2, "USD") {
		if months[k[:7]] == nil {
			months[k[:7]] = new(big.Rat)
		}
		months[k[:7]].Add(months[k[:7]], v)
	}
	checkAmounts(t, "month", entries(p, "[data-bucket-total]", "data-bucket-total"), months)

	// Labelled for screen readers, and nothing but focusable controls.
	p.visit("/console/costs?" + rng + "&by=service")
	unlabelled := eval[[]string](p, `[...document.querySelectorAll('input, select, button, textarea')]
		.filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim())).map((e) => e.outerHTML)`)
	if len(unlabelled) > 0 {
		t.Errorf("controls without a label: %q", unlabelled)
	}
	if n := eval[int](p, `document.querySelectorAll('[tabindex]:not([tabindex="0"]):not([tabindex="-1"])').length`); n != 0 {
		t.Errorf("%d elements with a positive tabindex", n)
	}
	if eval[string](p, `document.querySelector('.chart')?.getAttribute('role') + ' ' + !!document.querySelector('.chart')?.getAttribute('aria-label')`) != "img true" {
		t.Error("the chart is not described for screen readers")
	}
	p.clean()
	p.shot("console-costs.png")
}

// A CSV upload shows its progress and lands; a bad one shows the API's 422
// detail on its own row and writes nothing.
func testUploadShowsProgressAndLands(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, "production")
	dir := t.TempDir()

	var csv strings.Builder
	csv.WriteString("account_id,service,usage_date,amount,currency\n")
	want := new(big.Rat)
	const rows = 20000
	for i := range rows {
		amount := fmt.Sprintf("%d.%06d", i%97, i*7919%1000000)
		fmt.Fprintf(&csv, "%s,Service%02d,2025-04-%02d,%s,USD\n", acct, i%13, 1+i%30, amount)
		want.Add(want, rat(t, amount))
	}
	good := filepath.Join(dir, "april.csv")
	if err := os.WriteFile(good, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	badBody := "account_id,service,usage_date,amount,currency\n" +
		acct + ",EC2,2025-04-01,1.5,USD\n" + acct + ",EC2,2025-04-02,lots,USD\n"
	bad := filepath.Join(dir, "broken.csv")
	if err := os.WriteFile(bad, []byte(badBody), 0o644); err != nil {
		t.Fatal(err)
	}

	p := open(t, b, env)
	p.signIn("/console/upload", a.Editor)
	p.do("upload", chromedp.SetUploadFiles(chromedp.ID("u-files"), []string{good, bad}), chromedp.Click(chromedp.ID("u-send")))
	p.do("wait for both files", chromedp.WaitReady(chromedp.CSS(`tr[data-file="broken.csv"]:is([data-state="done"], [data-state="failed"])`)))

	st := eval[[]string](p, `(() => { const r = document.querySelector('tr[data-file="april.csv"]'); return [r.dataset.state, r.dataset.sent ?? '', r.querySelector('progress')?.value + '', r.textContent]; })()`)
	size, _ := os.Stat(good)
	if st[0] != "done" || st[1] != fmt.Sprint(size.Size()) || st[2] != "100" || !strings.Contains(st[3], fmt.Sprintf("Ingested %d rows", rows)) {
		t.Errorf("april.csv: state %s, progress reported %s of %d bytes, bar at %s, row %q", st[0], st[1], size.Size(), st[2], st[3])
	}
	perCurrency, _ := sums(t, summary(t, env, a.Viewer, "from=2025-04-01&to=2025-04-30&group_by=day"))
	if perCurrency["USD"] == nil || perCurrency["USD"].Cmp(want) != 0 {
		t.Errorf("after the upload the API totals %v, want %s", perCurrency["USD"], want.FloatString(6))
	}

	// The failing row shows the API's own 422 detail for that file.
	problem := env.Must(t, 422, "POST", "/v1/costs", a.Editor, badBody, "Content-Type", "text/csv").Map(t)
	detail := problem["detail"].(string)
	failed := eval[[]string](p, `(() => { const r = document.querySelector('tr[data-file="broken.csv"]'); return [r.dataset.state, r.querySelector('.result').textContent]; })()`)
	if failed[0] != "failed" || !strings.Contains(failed[1], detail) || !strings.Contains(failed[1], "422") {
		t.Errorf("broken.csv: state %s, row %q; want the 422 detail %q", failed[0], failed[1], detail)
	}
	if n := len(summary(t, env, a.Viewer, "from=2025-04-01&to=2025-04-30&group_by=service")); n != 13 {
		t.Errorf("%d services after the uploads, want the good file's 13 (the broken file must write nothing)", n)
	}
	p.clean()
	p.shot("console-upload.png")
}

// A viewer key is offered no upload, and the upload page refuses it; an
// editor key in the same browser, after signing out, is offered it. On a
// narrow screen nothing runs off the side.
func testViewerSeesNoUploadButton(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	costsIn(t, env, a.Editor)
	p := open(t, b, env)

	p.signIn("/console/costs?from=2025-03-01&to=2025-03-14", a.Viewer)
	if eval[bool](p, `!!document.querySelector('#nav a[href="/console/upload"]')`) {
		t.Error("a viewer is offered the upload page")
	}
	p.visit("/console/upload")
	if eval[bool](p, `!!document.querySelector('#u-files, #u-send, input[type=file]')`) {
		t.Error("a viewer sees an upload control")
	}
	if !strings.Contains(p.text(), "may only read") {
		t.Errorf("the upload page does not say why: %q", p.text())
	}

	p.do("sign out", chromedp.Click(chromedp.CSS(`#nav button`)))
	if eval[string](p, `sessionStorage.getItem('bulkhead.console.key') ?? ''`) != "" {
		t.Error("signing out leaves the key in session storage")
	}
	p.signIn("/console/upload", a.Editor)
	if !eval[bool](p, `!!document.querySelector('#nav a[href="/console/upload"]') && !!document.getElementById('u-send')`) {
		t.Error("an editor is not offered the upload")
	}

	// A phone-sized screen: the dashboard fits its width.
	p.do("narrow", chromedp.EmulateViewport(390, 844))
	p.visit("/console/costs?from=2025-03-01&to=2025-03-14&by=service")
	if w := eval[[]int](p, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("at %d px wide the page is %d px wide", w[1], w[0])
	}
	p.clean()
}

// Tenant A's console never shows tenant B's data, whatever B's ids or slug
// are typed into its URLs; and the other way round.
func testShowsOnlyTheKeysTenant(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	type side struct {
		tenant  apitest.Tenant
		account string
		budget  string
		marker  string
	}
	sides := make([]side, 2)
	for i, slug := range []string{"tenant-a", "tenant-b"} {
		s := &sides[i]
		s.tenant = env.Tenant(t, slug)
		s.marker = fmt.Sprintf("secret%c", 'A'+i)
		s.account = newAccount(t, env, s.tenant.Editor, s.marker+"-account")
		ingest(t, env, s.tenant.Editor,
			fmt.Sprintf("%s,%s-service,2025-03-02,%d77777.777777,USD", s.account, s.marker, i+1),
			fmt.Sprintf("%s,Shared,2025-03-03,1.000001,USD", s.account))
		s.budget = env.Must(t, 201, "POST", "/v1/budgets", s.tenant.Editor, map[string]any{
			"name": s.marker + "-budget", "amount": "100", "currency": "USD", "period": "monthly", "account_id": s.account,
		}).Map(t)["id"].(string)
	}
	p := open(t, b, env)
	for i, self := range sides {
		other := sides[1-i]
		forbidden := []string{other.marker, fmt.Sprintf("%d77,777.777777", 2-i), other.account, other.budget}
		look := func(path string, want ...string) {
			t.Helper()
			p.visit(path)
			text := p.text() + eval[string](p, `document.documentElement.outerHTML`)
			for _, f := range forbidden {
				if strings.Contains(text, f) {
					t.Errorf("%s's console at %s shows %s's %q", self.tenant.Slug, path, other.tenant.Slug, f)
				}
			}
			for _, w := range want {
				if !strings.Contains(p.text(), w) {
					t.Errorf("%s's console at %s does not say %q", self.tenant.Slug, path, w)
				}
			}
		}
		p.signIn("/console/costs?from=2025-03-01&to=2025-03-14", self.tenant.Viewer)
		look("/console/costs?from=2025-03-01&to=2025-03-14&by=service", self.marker+"-service")
		look("/console/costs?from=2025-03-01&to=2025-03-14&by=account", self.marker+"-account")
		look("/console/budgets/"+other.budget, "No such budget")
		look("/console/budgets", self.marker+"-budget")
		look("/console/accounts/"+other.account, "No such account")
		look("/console/costs?from=2025-03-01&to=2025-03-14&account="+other.account, "No such account")
		look("/console/costs?from=2025-03-01&to=2025-03-14&tenant="+other.tenant.Slug+"&tenant_id="+other.tenant.ID.String(), self.marker+"-service", self.tenant.Slug)
		// The totals are the key's tenant's own.
		perCurrency, _ := sums(t, summary(t, env, self.tenant.Viewer, "from=2025-03-01&to=2025-03-14&group_by=day"))
		checkAmounts(t, self.tenant.Slug+" total", entries(p, "[data-total-currency]", "data-total-currency"), perCurrency)
		p.clean()
		p.do("sign out", chromedp.Click(chromedp.CSS(`#nav button`)))
	}
}

// Budgets show what was spent and remains, exactly as the API says, and a
// projection to the period's end.
func testBudgets(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, "production")
	bud := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "Everything", "amount": "1000", "currency": "USD", "period": "monthly"}).Map(t)
	day := time.Now().UTC().Format(time.DateOnly)
	ingest(t, env, a.Editor, fmt.Sprintf("%s,EC2,%s,123.456789,USD", acct, day))
	api := env.Must(t, 200, "GET", "/v1/budgets/"+bud["id"].(string), a.Viewer, nil).Map(t)

	p := open(t, b, env)
	p.signIn("/console/budgets", a.Viewer)
	got := eval[[]string](p, `(() => { const r = document.querySelector('tr[data-budget]'); return [r.dataset.budget,
		r.querySelector('[data-spent]').dataset.spent, r.querySelector('[data-remaining]').dataset.remaining, r.querySelector('[data-projected]').dataset.projected]; })()`)
	if got[0] != bud["id"] || rat(t, got[1]).Cmp(rat(t, api["spent"].(string))) != 0 || rat(t, got[2]).Cmp(rat(t, api["remaining"].(string))) != 0 {
		t.Errorf("budget row %q; the API says spent %s remaining %s", got, api["spent"], api["remaining"])
	}
	if got[3] == "" || rat(t, got[3]).Cmp(rat(t, api["spent"].(string))) < 0 {
		t.Errorf("projection %q: want at least what is spent, %s", got[3], api["spent"])
	}
	p.visit("/console/budgets/" + bud["id"].(string))
	if !strings.Contains(p.text(), "Everything") || !strings.Contains(p.text(), "123.456789") {
		t.Errorf("one budget: %q", p.text())
	}
	p.clean()
}
