package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

type budget struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Amount      string  `json:"amount"`
	Currency    string  `json:"currency"`
	Period      string  `json:"period"`
	AccountID   *string `json:"account_id"`
	Service     *string `json:"service"`
	PeriodStart string  `json:"period_start"`
	PeriodEnd   string  `json:"period_end"`
	Spent       string  `json:"spent"`
	Remaining   string  `json:"remaining"`
}

func getBudget(t testing.TB, env *apitest.Env, key, id, at string) budget {
	t.Helper()
	path := "/v1/budgets/" + id
	if at != "" {
		path += "?at=" + at
	}
	var b budget
	env.Must(t, 200, "GET", path, key, nil).JSON(t, &b)
	return b
}

// spent and remaining count the cost items inside the budget's period, in
// its currency and scope, and ignore everything else.
func TestBudgetSpentAndRemaining(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	x, y := newAccount(t, env, a.Editor, 1), newAccount(t, env, a.Editor, 2)
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{
		// Inside February 2024.
		{x, "EC2", "2024-02-01", `"10.5"`, "USD"},
		{x, "S3", "2024-02-29", `"20.25"`, "USD"},
		{y, "EC2", "2024-02-15", `7`, "USD"},
		// Inside, but another currency.
		{x, "EC2", "2024-02-10", `3`, "EUR"},
		// Outside: the days just before and after, and another quarter.
		{x, "EC2", "2024-01-31", `100`, "USD"},
		{x, "EC2", "2024-03-01", `1000`, "USD"},
		{x, "S3", "2024-04-01", `5000`, "USD"},
	}))
	scoped := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{
		"name": "x monthly", "amount": "100", "currency": "USD", "period": "monthly", "account_id": x,
	}).Map(t)
	all := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, `{"name":"all quarterly","amount":1200.5,"currency":"USD","period":"quarterly"}`).Map(t)
	s3 := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{
		"name": "s3 yearly", "amount": "25", "currency": "USD", "period": "yearly", "service": "S3",
	}).Map(t)
	eur := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{
		"name": "eur", "amount": "2", "currency": "EUR", "period": "monthly",
	}).Map(t)
	for _, tc := range []struct {
		name, id, at                         string
		start, end, amount, spent, remaining string
	}{
		{"account x, February", scoped["id"].(string), "2024-02-15", "2024-02-01", "2024-02-29", "100", "30.75", "69.25"},
		{"account x, January", scoped["id"].(string), "2024-01-01", "2024-01-01", "2024-01-31", "100", "100", "0"},
		{"account x, a month without costs", scoped["id"].(string), "2023-06-30", "2023-06-01", "2023-06-30", "100", "0", "100"},
		{"every account, Q1", all["id"].(string), "2024-03-31", "2024-01-01", "2024-03-31", "1200.5", "1137.75", "62.75"},
		{"S3, 2024: over budget", s3["id"].(string), "2024-12-31", "2024-01-01", "2024-12-31", "25", "5020.25", "-4995.25"},
		{"EUR only", eur["id"].(string), "2024-02-01", "2024-02-01", "2024-02-29", "2", "3", "-1"},
	} {
		b := getBudget(t, env, a.Viewer, tc.id, tc.at)
		if b.PeriodStart != tc.start || b.PeriodEnd != tc.end || b.Amount != tc.amount || b.Spent != tc.spent || b.Remaining != tc.remaining {
			t.Errorf("%s: period %s..%s amount %s spent %s remaining %s; want %s..%s %s %s %s", tc.name,
				b.PeriodStart, b.PeriodEnd, b.Amount, b.Spent, b.Remaining, tc.start, tc.end, tc.amount, tc.spent, tc.remaining)
		}
	}
	if scoped["account_id"] != x || scoped["service"] != nil || s3["service"] != "S3" || all["account_id"] != nil {
		t.Errorf("scopes: %v %v %v", scoped, s3, all)
	}

	// Without ?at the period is the current one (UTC): today's cost counts.
	today := time.Now().UTC().Format(time.DateOnly)
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{{x, "EC2", today, `"4.5"`, "USD"}}))
	for {
		start := time.Now().UTC()
		b := getBudget(t, env, a.Viewer, scoped["id"].(string), "")
		if time.Now().UTC().Month() != start.Month() {
			continue // the month turned during the request: ask again
		}
		if b.PeriodStart != start.Format("2006-01")+"-01" || b.Spent != "4.5" || b.Remaining != "95.5" {
			t.Errorf("current period: %+v", b)
		}
		break
	}
}

func TestBudgets(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")
	x := newAccount(t, env, a.Editor, 1)
	created := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{
		"name": "compute", "amount": 50, "currency": "usd", "period": "monthly", "account_id": x,
	})
	c := created.Map(t)
	id := c["id"].(string)
	if created.Header.Get("Location") != "/v1/budgets/"+id || c["currency"] != "USD" || c["amount"] != "50" || c["spent"] != "0" {
		t.Errorf("created %s", created.Body)
	}
	dup := env.Must(t, 409, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "compute", "amount": 1, "currency": "USD", "period": "yearly"})
	if d := dup.Map(t)["detail"]; d != "a budget with this name already exists" {
		t.Errorf("a duplicate budget: detail %q", d)
	}
	env.Must(t, 403, "POST", "/v1/budgets", a.Viewer, map[string]any{"name": "v", "amount": 1, "currency": "USD", "period": "yearly"})

	// Validation names every bad field.
	r := env.Must(t, 422, "POST", "/v1/budgets", a.Editor, map[string]any{
		"name": "", "amount": "-5", "currency": "XYZ", "period": "weekly", "account_id": "nope", "service": "",
	})
	if got := fmt.Sprint(fieldsOf(t, r)); got != "[name amount currency period account_id service]" {
		t.Errorf("fields %s: %s", got, r.Body)
	}
	r = env.Must(t, 422, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "n", "amount": "1,5", "currency": "USD", "period": "yearly"})
	if got := fmt.Sprint(fieldsOf(t, r)); got != "[amount]" {
		t.Errorf("not a decimal: %s", r.Body)
	}
	// Twelve decimals and more are kept exactly, never rounded.
	tiny := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "tiny", "amount": "0.000000000001", "currency": "USD", "period": "yearly"}).Map(t)
	if tiny["amount"] != "0.000000000001" || tiny["remaining"] != "0.000000000001" {
		t.Errorf("a twelve-decimal budget: %v", tiny)
	}
	env.Must(t, 204, "DELETE", "/v1/budgets/"+tiny["id"].(string), a.Editor, nil)
	env.Must(t, 422, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "n", "currency": "USD", "period": "yearly"})
	env.Must(t, 400, "POST", "/v1/budgets", a.Editor, `{"name":"n","amount":1,"currency":"USD","period":"yearly","tenant_id":"x"}`)
	env.Must(t, 400, "GET", "/v1/budgets/"+id+"?at=2024-02-30", a.Editor, nil)

	// Isolation, both ways: another tenant's budget is not found, and its
	// account cannot scope a budget.
	theirs := env.Must(t, 201, "POST", "/v1/budgets", b.Editor, map[string]any{"name": "compute", "amount": 1, "currency": "USD", "period": "yearly"}).Map(t)
	y := newAccount(t, env, b.Editor, 1)
	for _, dir := range []struct {
		self      apitest.Tenant
		budget    string
		account   string
		otherView string
	}{{a, theirs["id"].(string), y, b.Viewer}, {b, id, x, a.Viewer}} {
		env.Must(t, 404, "GET", "/v1/budgets/"+dir.budget, dir.self.Editor, nil)
		env.Must(t, 404, "DELETE", "/v1/budgets/"+dir.budget, dir.self.Editor, nil)
		r := env.Must(t, 422, "POST", "/v1/budgets", dir.self.Editor, map[string]any{
			"name": "stolen scope", "amount": 1, "currency": "USD", "period": "yearly", "account_id": dir.account,
		})
		if got := fmt.Sprint(fieldsOf(t, r)); got != "[account_id]" || !strings.Contains(string(r.Body), "no such account") {
			t.Errorf("%s scoping by another tenant's account: %s", dir.self.Slug, r.Body)
		}
		list := env.Must(t, 200, "GET", "/v1/budgets", dir.self.Viewer, nil)
		if strings.Contains(string(list.Body), dir.budget) {
			t.Errorf("%s lists another tenant's budget", dir.self.Slug)
		}
		env.Must(t, 200, "GET", "/v1/budgets/"+dir.budget, dir.otherView, nil)
	}

	// A budget scoped to an account keeps it: deleting the account is a 409
	// saying so, until the budget is gone.
	r = env.Must(t, 409, "DELETE", "/v1/accounts/"+x, a.Editor, nil)
	if !strings.Contains(r.Map(t)["detail"].(string), "budgets") {
		t.Errorf("409: %s", r.Body)
	}
	env.Must(t, 204, "DELETE", "/v1/budgets/"+id, a.Editor, nil)
	env.Must(t, 404, "GET", "/v1/budgets/"+id, a.Editor, nil)
	env.Must(t, 204, "DELETE", "/v1/accounts/"+x, a.Editor, nil)

	// Listing pages through budgets in creation order, without spending.
	var ids []string
	for i := range 5 {
		ids = append(ids, env.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{
			"name": fmt.Sprint("b", i), "amount": "1", "currency": "EUR", "period": "quarterly",
		}).Map(t)["id"].(string))
	}
	var got []string
	path := "/v1/budgets?limit=2"
	for pages := 0; ; pages++ {
		if pages == maxPages {
			t.Fatalf("GET /v1/budgets: still a next cursor after %d pages", pages)
		}
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		env.Must(t, 200, "GET", path, a.Viewer, nil).JSON(t, &page)
		for _, it := range page.Items {
			got = append(got, it["id"].(string))
			if _, ok := it["spent"]; ok {
				t.Errorf("list item with spending: %v", it)
			}
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/budgets?limit=2&cursor=" + *page.NextCursor
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("listed %v, want %v", got, ids)
	}
}
