package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/await"
)

// newAccount creates an account with key and returns its id.
func newAccount(t testing.TB, env *apitest.Env, key string, i int) string {
	t.Helper()
	return env.Must(t, 201, "POST", "/v1/accounts", key, account(i)).Map(t)["id"].(string)
}

// cost is one cost item as a client sends it in JSON; Amount is written as
// is, so that it can be a JSON number or a JSON string.
type cost struct {
	Account, Service, Date, Amount, Currency string
}

func jsonCosts(items []cost) string {
	var b strings.Builder
	b.WriteString("[")
	for i, c := range items {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"account_id":%q,"service":%q,"usage_date":%q,"amount":%s,"currency":%q}`,
			c.Account, c.Service, c.Date, c.Amount, c.Currency)
	}
	b.WriteString("]")
	return b.String()
}

// csvCosts writes items as CSV; amounts lose JSON string quotes.
func csvCosts(items []cost) string {
	var b strings.Builder
	b.WriteString("account_id,service,usage_date,amount,currency\r\n")
	for _, c := range items {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s\r\n", c.Account, c.Service, c.Date, strings.Trim(c.Amount, `"`), c.Currency)
	}
	return b.String()
}

var csvHeader = []string{"Content-Type", "text/csv"}

type costPage struct {
	Items []struct {
		ID        string `json:"id"`
		AccountID string `json:"account_id"`
		Service   string `json:"service"`
		UsageDate string `json:"usage_date"`
		Amount    string `json:"amount"`
		Currency  string `json:"currency"`
	} `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// maxPages bounds a walk over a list's pages: a cursor that never ends
// fails the test rather than loop until go test's timeout.
const maxPages = 1000

// allCosts walks every page of GET /v1/costs?query and returns the items.
func allCosts(t testing.TB, env *apitest.Env, key, query string) costPage {
	t.Helper()
	var all costPage
	path := "/v1/costs?limit=1000&" + query
	for pages := 0; ; pages++ {
		if pages == maxPages {
			t.Fatalf("GET /v1/costs?%s: still a next cursor after %d pages", query, pages)
		}
		var page costPage
		env.Must(t, 200, "GET", path, key, nil).JSON(t, &page)
		all.Items = append(all.Items, page.Items...)
		if page.NextCursor == nil {
			return all
		}
		path = "/v1/costs?limit=1000&" + query + "&cursor=" + *page.NextCursor
	}
}

// summary returns GET /v1/costs/summary?query as "key currency" -> amount.
func summary(t testing.TB, env *apitest.Env, key, query string) map[string]string {
	t.Helper()
	var s struct {
		Items []struct{ Key, Amount, Currency string } `json:"items"`
	}
	env.Must(t, 200, "GET", "/v1/costs/summary?"+query, key, nil).JSON(t, &s)
	out := map[string]string{}
	for _, it := range s.Items {
		out[it.Key+" "+it.Currency] = it.Amount
	}
	return out
}

func fieldsOf(t testing.TB, r *apitest.Response) []string {
	t.Helper()
	var p struct {
		Errors []struct{ Field string } `json:"errors"`
	}
	r.JSON(t, &p)
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

// "0.1" + "0.2" + 0.1 is exactly 0.4, from JSON strings, JSON numbers and
// CSV alike, and amounts come back as strings with six decimals.
func TestMoneyIsExact(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{
		{acct, "EC2", "2024-01-01", `"0.1"`, "USD"},
		{acct, "EC2", "2024-01-02", `"0.2"`, "USD"},
		{acct, "EC2", "2024-01-03", `0.1`, "USD"},
	}))
	if got := r.Map(t)["inserted"]; got != float64(3) {
		t.Fatalf("inserted %v, want 3", got)
	}
	if got := summary(t, env, a.Viewer, "group_by=service"); got["EC2 USD"] != "0.4" || len(got) != 1 {
		t.Fatalf("summary %v, want EC2 USD 0.4", got)
	}
	page := allCosts(t, env, a.Viewer, "")
	var amounts []string
	for _, it := range page.Items {
		amounts = append(amounts, it.Amount)
		if it.ID == "" || it.AccountID != acct || it.Currency != "USD" {
			t.Errorf("item %+v", it)
		}
	}
	if fmt.Sprint(amounts) != "[0.1 0.2 0.1]" {
		t.Errorf("amounts %v", amounts)
	}
	// The same in CSV, and in another currency: summed apart, never together.
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, csvCosts([]cost{
		{acct, "EC2", "2024-01-01", "0.1", "EUR"},
		{acct, "EC2", "2024-01-01", "0.2", "EUR"},
		{acct, "EC2", "2024-01-01", "0.1", "EUR"},
		{acct, "EC2", "2024-01-01", "-0.000001", "EUR"},
	}), csvHeader...)
	got := summary(t, env, a.Viewer, "")
	if got["EC2 USD"] != "0.4" || got["EC2 EUR"] != "0.399999" || len(got) != 2 {
		t.Fatalf("summary %v", got)
	}
	// Nothing is rounded, and anything that is not a decimal is refused.
	for _, amount := range []string{`"12,5"`, `"1.2.3"`, `"NaN"`, `"1e999"`, `true`} {
		r := env.Must(t, 422, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{{acct, "EC2", "2024-01-01", amount, "USD"}}))
		if f := fieldsOf(t, r); fmt.Sprint(f) != "[[0].amount]" {
			t.Errorf("amount %s: fields %v", amount, f)
		}
	}
}

// The summary is the sum the test computes itself over thousands of random
// rows, for every grouping and a date window.
func TestSummaryMatchesOwnSum(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	accounts := []string{newAccount(t, env, a.Editor, 1), newAccount(t, env, a.Editor, 2), newAccount(t, env, a.Editor, 3)}
	services := []string{"EC2", "S3", "Lambda", "BigQuery, \"analytics\""}
	currencies := []string{"USD", "EUR", "JPY"}
	rng := rand.New(rand.NewPCG(1, 2))
	type key struct{ group, key, currency string }
	want := map[key]*big.Int{}
	add := func(k key, micros int64) {
		if want[k] == nil {
			want[k] = new(big.Int)
		}
		want[k].Add(want[k], big.NewInt(micros))
	}
	const n = 3000
	var items []cost
	for i := range n {
		c := cost{
			Account:  accounts[rng.IntN(len(accounts))],
			Service:  services[rng.IntN(len(services))],
			Date:     fmt.Sprintf("2024-03-%02d", 1+rng.IntN(31)),
			Currency: currencies[rng.IntN(len(currencies))],
		}
		micros := rng.Int64N(2_000_000_000_000) - 100_000_000_000 // -100000 to 1900000, six decimals
		c.Amount = micro(micros)
		if i%2 == 0 {
			c.Amount = `"` + c.Amount + `"`
		}
		items = append(items, c)
		inWindow := c.Date >= "2024-03-10" && c.Date <= "2024-03-20"
		for _, g := range []struct{ group, key string }{{"service", c.Service}, {"account", c.Account}, {"day", c.Date}} {
			add(key{g.group, g.key, c.Currency}, micros)
			if inWindow {
				add(key{g.group + " window", g.key, c.Currency}, micros)
			}
		}
	}
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts(items))
	for _, q := range []struct{ group, query string }{
		{"service", "group_by=service"},
		{"account", "group_by=account"},
		{"day", "group_by=day"},
		{"service window", "group_by=service&from=2024-03-10&to=2024-03-20"},
		{"account window", "group_by=account&from=2024-03-10&to=2024-03-20"},
		{"day window", "group_by=day&from=2024-03-10&to=2024-03-20"},
	} {
		got := summary(t, env, a.Viewer, q.query)
		expect := map[string]string{}
		for k, v := range want {
			if k.group == q.group {
				expect[k.key+" "+k.currency] = micro(v.Int64())
			}
		}
		if len(got) != len(expect) {
			t.Errorf("%s: %d totals, want %d", q.query, len(got), len(expect))
		}
		for k, v := range expect {
			if got[k] != v {
				t.Errorf("%s: %s = %s, want %s", q.query, k, got[k], v)
			}
		}
	}
}

// micro writes an amount of micro-units as a decimal with six places.
func micro(m int64) string {
	sign := ""
	if m < 0 {
		sign, m = "-", -m
	}
	return fmt.Sprintf("%s%d.%06d", sign, m/1_000_000, m%1_000_000)
}

// One invalid row among thousands rejects the request with a 422 naming the
// row and field, and writes nothing.
func TestInvalidRowWritesNothing(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	items := make([]cost, 3000)
	for i := range items {
		items[i] = cost{acct, "EC2", "2024-01-01", `"1.5"`, "USD"}
	}
	for _, tc := range []struct {
		name, field string
		bad         func(c *cost)
	}{
		{"amount", "amount", func(c *cost) { c.Amount = `"1.2.3"` }},
		{"date", "usage_date", func(c *cost) { c.Date = "2024-02-30" }},
		{"currency", "currency", func(c *cost) { c.Currency = "XYZ" }},
		{"account", "account_id", func(c *cost) { c.Account = "00000000-0000-7000-8000-000000000001" }},
		{"service", "service", func(c *cost) { c.Service = "" }},
	} {
		bad := append([]cost(nil), items...)
		tc.bad(&bad[1234])
		r := env.Must(t, 422, "POST", "/v1/costs", a.Editor, jsonCosts(bad))
		if f := fieldsOf(t, r); fmt.Sprint(f) != "[[1234]."+tc.field+"]" || !strings.Contains(r.Map(t)["detail"].(string), "[1234]."+tc.field) {
			t.Errorf("JSON, bad %s: %s", tc.name, r.Body)
		}
		// CSV rows are numbered as a spreadsheet shows them: header is row 1.
		r = env.Must(t, 422, "POST", "/v1/costs", a.Editor, csvCosts(bad), csvHeader...)
		if f := fieldsOf(t, r); fmt.Sprint(f) != "[row 1236."+tc.field+"]" || !strings.Contains(r.Map(t)["detail"].(string), "row 1236."+tc.field) {
			t.Errorf("CSV, bad %s: %s", tc.name, r.Body)
		}
	}
	if n := len(allCosts(t, env, a.Viewer, "").Items); n != 0 {
		t.Fatalf("%d cost items written by rejected requests", n)
	}
	// A header that is wrong is named too.
	r := env.Must(t, 422, "POST", "/v1/costs", a.Editor, "account_id,service,date,amount,currency\n", csvHeader...)
	if f := fieldsOf(t, r); len(f) != 2 || f[0] != "header" || !strings.Contains(string(r.Body), `unknown column \"date\"`) {
		t.Errorf("bad header: %s", r.Body)
	}
}

// Naming another tenant's account is refused as if it did not exist,
// nothing is written, and the other tenant's data is unchanged. Both
// directions.
func TestIngestAnotherTenantsAccount(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")
	accts := map[string]string{a.Slug: newAccount(t, env, a.Editor, 1), b.Slug: newAccount(t, env, b.Editor, 1)}
	for _, tn := range []apitest.Tenant{a, b} {
		env.Must(t, 201, "POST", "/v1/costs", tn.Editor, jsonCosts([]cost{{accts[tn.Slug], "EC2", "2024-01-01", `"5"`, "USD"}}))
	}
	for _, dir := range []struct{ self, other apitest.Tenant }{{a, b}, {b, a}} {
		before := env.Must(t, 200, "GET", "/v1/costs", dir.other.Viewer, nil).Body
		beforeSummary := env.Must(t, 200, "GET", "/v1/costs/summary", dir.other.Viewer, nil).Body
		items := make([]cost, 10)
		for i := range items {
			items[i] = cost{accts[dir.self.Slug], "EC2", "2024-01-02", `"1"`, "USD"}
		}
		items[7].Account = accts[dir.other.Slug]
		r := env.Must(t, 422, "POST", "/v1/costs", dir.self.Editor, jsonCosts(items))
		if f := fieldsOf(t, r); fmt.Sprint(f) != "[[7].account_id]" || !strings.Contains(string(r.Body), "no such account") {
			t.Errorf("%s naming %s's account: %s", dir.self.Slug, dir.other.Slug, r.Body)
		}
		env.Must(t, 422, "POST", "/v1/costs", dir.self.Editor, csvCosts(items), csvHeader...)
		if got := len(allCosts(t, env, dir.self.Viewer, "").Items); got != 1 {
			t.Errorf("%s has %d cost items, want its 1", dir.self.Slug, got)
		}
		if after := env.Must(t, 200, "GET", "/v1/costs", dir.other.Viewer, nil).Body; !bytes.Equal(before, after) {
			t.Errorf("%s's costs changed:\n%s\n%s", dir.other.Slug, before, after)
		}
		if after := env.Must(t, 200, "GET", "/v1/costs/summary", dir.other.Viewer, nil).Body; !bytes.Equal(beforeSummary, after) {
			t.Errorf("%s's summary changed: %s -> %s", dir.other.Slug, beforeSummary, after)
		}
		// Filtering by the other tenant's account finds nothing.
		if got := allCosts(t, env, dir.self.Viewer, "account_id="+accts[dir.other.Slug]).Items; len(got) != 0 {
			t.Errorf("%s filtering by %s's account sees %d items", dir.self.Slug, dir.other.Slug, len(got))
		}
	}
}

// A walk through the pages sees every item that existed when it began
// exactly once, while other requests keep inserting items on every day of
// the range, before and after the walk's position.
func TestCostPaginationUnderConcurrentInserts(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	day := func(i int) string { return fmt.Sprintf("2024-05-%02d", 1+i%31) }
	var items []cost
	for i := range 700 {
		items = append(items, cost{acct, "EC2", day(i * 7), `"1"`, "USD"})
	}
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts(items))
	existing := map[string]bool{}
	for _, it := range allCosts(t, env, a.Viewer, "").Items {
		existing[it.ID] = true
	}
	if len(existing) != 700 {
		t.Fatalf("%d items before the walk, want 700", len(existing))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	inserted := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			batch := make([]cost, 10)
			for j := range batch {
				batch[j] = cost{acct, "S3", day(i*10 + j), `"2"`, "USD"}
			}
			req, _ := http.NewRequest("POST", env.URL+"/v1/costs", strings.NewReader(jsonCosts(batch)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+a.Editor)
			res, err := env.Client.Do(req)
			if err != nil {
				t.Errorf("concurrent insert: %v", err)
				return
			}
			res.Body.Close()
			if res.StatusCode != 201 {
				t.Errorf("concurrent insert: %d", res.StatusCode)
				return
			}
			inserted += len(batch)
		}
	}()

	seen := map[string]int{}
	path, pages := "/v1/costs?limit=23", 0
	var last string
	for {
		var page costPage
		env.Must(t, 200, "GET", path, a.Viewer, nil).JSON(t, &page)
		pages++
		for _, it := range page.Items {
			seen[it.ID]++
			if k := it.UsageDate + " " + it.ID; k <= last {
				t.Fatalf("out of order: %s after %s", k, last)
			} else {
				last = k
			}
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/costs?limit=23&cursor=" + *page.NextCursor
	}
	close(stop)
	await.Group(t, &wg, "the inserts during the walk")
	if inserted == 0 {
		t.Fatal("no insert ran during the walk")
	}
	for id := range existing {
		if seen[id] != 1 {
			t.Errorf("pre-existing item %s seen %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("item %s seen %d times", id, n)
		}
	}
	t.Logf("%d pages, %d items seen, %d inserted during the walk", pages, len(seen), inserted)
}

// Filters narrow the list and the summary; pages are keyset pages.
func TestCostFilters(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	x, y := newAccount(t, env, a.Editor, 1), newAccount(t, env, a.Editor, 2)
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{
		{x, "EC2", "2024-01-01", `1`, "USD"},
		{x, "EC2", "2024-01-15", `2`, "USD"},
		{y, "EC2", "2024-01-15", `4`, "USD"},
		{x, "S3", "2024-01-31", `8`, "USD"},
		{y, "S3", "2024-02-01", `16`, "USD"},
	}))
	for _, tc := range []struct {
		query string
		n     int
	}{
		{"", 5},
		{"account_id=" + x, 3},
		{"account_id=" + y + "&from=2024-01-16", 1},
		{"from=2024-01-15&to=2024-01-31", 3},
		{"to=2024-01-01", 1},
		{"from=2024-02-02", 0},
	} {
		if got := allCosts(t, env, a.Viewer, tc.query).Items; len(got) != tc.n {
			t.Errorf("?%s: %d items, want %d", tc.query, len(got), tc.n)
		}
	}
	var page costPage
	env.Must(t, 200, "GET", "/v1/costs?limit=2", a.Viewer, nil).JSON(t, &page)
	if len(page.Items) != 2 || page.NextCursor == nil {
		t.Fatalf("first page %+v", page)
	}
	if got := summary(t, env, a.Viewer, "group_by=day&from=2024-01-15&to=2024-01-31"); fmt.Sprint(got) != "map[2024-01-15 USD:6 2024-01-31 USD:8]" {
		t.Errorf("daily summary %v", got)
	}
	if got := summary(t, env, a.Viewer, "group_by=account"); got[x+" USD"] != "11" || got[y+" USD"] != "20" {
		t.Errorf("summary by account %v", got)
	}
	if got := summary(t, env, a.Viewer, "account_id="+y); fmt.Sprint(got) != "map[EC2 USD:4 S3 USD:16]" {
		t.Errorf("summary of account y %v", got)
	}
}

// An account that cost items refer to cannot be deleted: 409, with a detail
// that says why.
func TestAccountWithCostsCannotBeDeleted(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{{acct, "EC2", "2024-01-01", `1`, "USD"}}))
	r := env.Must(t, 409, "DELETE", "/v1/accounts/"+acct, a.Editor, nil)
	if !strings.Contains(r.Map(t)["detail"].(string), "cost items") {
		t.Errorf("409: %s", r.Body)
	}
	env.Must(t, 200, "GET", "/v1/accounts/"+acct, a.Editor, nil)
}

// Errors of the costs API are problems, with the right status.
func TestCostErrors(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	acct := newAccount(t, env, a.Editor, 1)
	var many strings.Builder
	many.WriteString("account_id,service,usage_date,amount,currency\n")
	for range 100_001 {
		many.WriteString(acct + ",E,2024-01-01,1,USD\n")
	}
	huge := "account_id,service,usage_date,amount,currency\n" + strings.Repeat(acct+","+strings.Repeat("x", 200)+",2024-01-01,1,USD\n", 45_000)
	one := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `1`, "USD"}})
	cases := []struct {
		name, method, path, key string
		body                    any
		header                  []string
		status                  int
		detail                  string
	}{
		{"wrong content type", "POST", "/v1/costs", a.Editor, one, []string{"Content-Type", "text/plain"}, 415, "Content-Type"},
		{"malformed JSON", "POST", "/v1/costs", a.Editor, `[{"account_id":`, nil, 400, "truncated JSON"},
		{"not an array", "POST", "/v1/costs", a.Editor, `{"account_id":"x"}`, nil, 400, "JSON array"},
		{"malformed CSV", "POST", "/v1/costs", a.Editor, "account_id,service,usage_date,amount,currency\n\"x", csvHeader, 400, "malformed CSV"},
		{"more than 100000 rows", "POST", "/v1/costs", a.Editor, many.String(), csvHeader, 413, "100000"},
		{"body over 10 MiB", "POST", "/v1/costs", a.Editor, huge, csvHeader, 413, "10 MiB"},
		{"viewer writing", "POST", "/v1/costs", a.Viewer, one, nil, 403, "read-only"},
		{"wrong method", "PUT", "/v1/costs", a.Editor, one, nil, 405, "method not allowed"},
		{"bad date", "GET", "/v1/costs?from=2024-13-01", a.Viewer, nil, nil, 400, "from"},
		{"from after to", "GET", "/v1/costs?from=2024-02-01&to=2024-01-01", a.Viewer, nil, nil, 400, "from"},
		{"bad account filter", "GET", "/v1/costs?account_id=nope", a.Viewer, nil, nil, 400, "account_id"},
		{"bad cursor", "GET", "/v1/costs?cursor=garbage", a.Viewer, nil, nil, 400, "cursor"},
		{"bad limit", "GET", "/v1/costs?limit=0", a.Viewer, nil, nil, 400, "limit"},
		{"bad group_by", "GET", "/v1/costs/summary?group_by=nope", a.Viewer, nil, nil, 400, "group_by"},
		{"empty tag group", "GET", "/v1/costs/summary?group_by=tag:", a.Viewer, nil, nil, 400, "group_by"},
		{"bad metric", "GET", "/v1/costs/summary?metric=cost", a.Viewer, nil, nil, 400, "metric"},
		{"bad tag filter", "GET", "/v1/costs?tag=team", a.Viewer, nil, nil, 400, "tag"},
		{"summary from after to", "GET", "/v1/costs/summary?from=2024-02-01&to=2024-01-01", a.Viewer, nil, nil, 400, "from"},
		{"no key", "GET", "/v1/costs/summary", "", nil, nil, 401, "API key"},
	}
	// Without a Content-Length, the limit cuts the body off while it is
	// read: still a 413.
	req, _ := http.NewRequest("POST", env.URL+"/v1/costs", io.MultiReader(strings.NewReader(huge)))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+a.Editor)
	res, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if req.ContentLength > 0 || res.StatusCode != 413 {
		t.Errorf("chunked body over 10 MiB: %d", res.StatusCode)
	}
	for _, tc := range cases {
		r := env.Do(t, tc.method, tc.path, tc.key, tc.body, tc.header...)
		if r.Status != tc.status {
			t.Errorf("%s: got %d %.300s, want %d", tc.name, r.Status, r.Body, tc.status)
			continue
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
		p := r.Map(t)
		if p["status"] != float64(tc.status) || !strings.Contains(fmt.Sprint(p["detail"]), tc.detail) {
			t.Errorf("%s: problem %s does not say %q", tc.name, r.Body, tc.detail)
		}
		for _, leak := range []string{"SQLSTATE", "pgx", "violates", "relation", "constraint"} {
			if strings.Contains(problemText(t, p), leak) {
				t.Errorf("%s: body leaks database text %q: %s", tc.name, leak, r.Body)
			}
		}
	}
	if n := len(allCosts(t, env, a.Viewer, "").Items); n != 0 {
		t.Errorf("%d items written by failed requests", n)
	}
}

// An idempotent replay returns the first response and writes nothing; the
// same key with another body is a 409; keys are per tenant; concurrent
// requests with one key do the work once.
func TestIdempotentIngest(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")
	acct := newAccount(t, env, a.Editor, 1)
	body := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `"1.25"`, "USD"}, {acct, "S3", "2024-01-02", `2`, "USD"}})
	key := []string{"Idempotency-Key", "upload-2024-01"}

	first := env.Must(t, 201, "POST", "/v1/costs", a.Editor, body, key...)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first response marked replayed")
	}
	replay := env.Must(t, 201, "POST", "/v1/costs", a.Editor, body, key...)
	if !bytes.Equal(first.Body, replay.Body) || replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %s %v, first %s", replay.Body, replay.Header, first.Body)
	}
	if n := len(allCosts(t, env, a.Viewer, "").Items); n != 2 {
		t.Fatalf("%d items after a replay, want 2", n)
	}
	other := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `"9.99"`, "USD"}})
	r := env.Must(t, 409, "POST", "/v1/costs", a.Editor, other, key...)
	if !strings.Contains(r.Map(t)["detail"].(string), "Idempotency-Key") {
		t.Errorf("conflicting replay: %s", r.Body)
	}
	env.Must(t, 409, "POST", "/v1/costs", a.Editor, csvCosts([]cost{{acct, "EC2", "2024-01-01", `1.25`, "USD"}, {acct, "S3", "2024-01-02", `2`, "USD"}}), "Content-Type", "text/csv", key[0], key[1])
	if n := len(allCosts(t, env, a.Viewer, "").Items); n != 2 {
		t.Fatalf("%d items after a conflicting replay, want 2", n)
	}
	// Another tenant's key space is its own.
	bAcct := newAccount(t, env, b.Editor, 1)
	env.Must(t, 201, "POST", "/v1/costs", b.Editor, jsonCosts([]cost{{bAcct, "EC2", "2024-01-01", `1`, "USD"}}), key...)
	// A request that failed left no key behind: the key works once fixed.
	bad := jsonCosts([]cost{{acct, "EC2", "2024-01-01", `"x"`, "USD"}})
	env.Must(t, 422, "POST", "/v1/costs", a.Editor, bad, "Idempotency-Key", "fixed-later")
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, other, "Idempotency-Key", "fixed-later")
	env.Must(t, 400, "POST", "/v1/costs", a.Editor, other, "Idempotency-Key", strings.Repeat("k", 256))

	// Concurrent requests with one new key: one does the work; each other
	// one either replays it (it came after the commit) or is answered 409
	// at once while the work runs — never a second write.
	before := len(allCosts(t, env, a.Viewer, "").Items)
	var wg sync.WaitGroup
	results := make([]*http.Response, 6)
	details := make([]string, len(results))
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", env.URL+"/v1/costs", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+a.Editor)
			req.Header.Set("Idempotency-Key", "concurrent")
			res, err := env.Client.Do(req)
			if err != nil {
				t.Errorf("concurrent: %v", err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			results[i], details[i] = res, string(b)
		}()
	}
	await.Group(t, &wg, "the concurrent requests with one Idempotency-Key")
	wrote := 0
	for i, res := range results {
		switch {
		case res == nil:
		case res.StatusCode == 201 && res.Header.Get("Idempotent-Replayed") != "true":
			wrote++
		case res.StatusCode == 201:
		case res.StatusCode == 409 && strings.Contains(details[i], "in progress"):
		default:
			t.Errorf("concurrent request: %d %s", res.StatusCode, details[i])
		}
	}
	if after := len(allCosts(t, env, a.Viewer, "").Items); after != before+2 || wrote != 1 {
		t.Errorf("concurrent requests with one key wrote %d items (want 2) in %d requests (want 1)", after-before, wrote)
	}
}

// BenchmarkIngest measures one request of 100,000 cost items in CSV, end
// to end over HTTP, and of 75,000 in JSON: a JSON array of 100,000 items
// is larger than the 10 MiB a body may be.
func BenchmarkIngest(b *testing.B) {
	env := apitest.Start(b, nil)
	a := env.Tenant(b, "bench")
	acct := newAccount(b, env, a.Editor, 1)
	items := make([]cost, 100_000)
	for i := range items {
		items[i] = cost{acct, "EC2", fmt.Sprintf("2024-%02d-%02d", 1+i%12, 1+i%28), micro(int64(i) * 1234), "USD"}
	}
	for _, f := range []struct {
		name   string
		rows   int
		body   string
		header []string
	}{
		{"csv-100k", 100_000, csvCosts(items), csvHeader},
		{"json-75k", 75_000, jsonCosts(items[:75_000]), nil},
	} {
		b.Run(f.name, func(b *testing.B) {
			b.SetBytes(int64(len(f.body)))
			for b.Loop() {
				r := env.Do(b, "POST", "/v1/costs", a.Editor, f.body, f.header...)
				if r.Status != 201 {
					b.Fatalf("ingest: %.300s", r)
				}
			}
			b.ReportMetric(float64(b.N*f.rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
