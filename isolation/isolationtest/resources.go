package isolationtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// The seeded costs' days, and a day inside their budgets' month.
const (
	day1, day2 = "2025-01-15", "2025-01-16"
	budgetDay  = "2025-01-20"
)

// holdings is what one tenant made through the API, as its own key saw it
// when it was made.
type holdings struct {
	tenant   apitest.Tenant
	accounts []map[string]any
	// costs are the tenant's cost items; each service starts with the
	// tenant's slug and each amount is the tenant's, so a foreign item is
	// told apart by content as well as by id.
	costs   []costItem
	amount  string // of every seeded cost item
	budgets []map[string]any
	// rows are how many rows of each tenant table the tenant holds.
	rows map[string]int
	// idempotencyKey is the key the tenant ingested its costs with.
	idempotencyKey string
	// imports are the ids of the tenant's FOCUS loads; billingAccount is
	// the FOCUS billing account its datasets name.
	imports        []string
	billingAccount string
}

type costItem struct {
	ID        string `json:"id"`
	AccountID string `json:"account_id"`
	Service   string `json:"service"`
	UsageDate string `json:"usage_date"`
	Amount    string `json:"amount"`
	Currency  string `json:"currency"`
}

// ids are the victim's identifiers that must never show up in an answer to
// the attacker: its tenant id and every id of its resources.
func (h *holdings) ids() []string {
	out := []string{h.tenant.ID.String()}
	for _, a := range h.accounts {
		out = append(out, a["id"].(string))
	}
	for _, c := range h.costs {
		if c.ID != "" { // items an attack added are known by amount only
			out = append(out, c.ID)
		}
	}
	for _, b := range h.budgets {
		out = append(out, b["id"].(string))
	}
	return append(out, h.imports...)
}

// focusDataset is a FOCUS dataset of t's: one row per sub account, each of
// amount, named by the tenant's slug, on billingAccount's January 2025.
func focusDataset(slug, billingAccount, amount string, subAccounts []string) string {
	var b strings.Builder
	b.WriteString("BillingAccountId,SubAccountId,ProviderName,ServiceName,ServiceCategory,ChargePeriodStart,BillingPeriodStart,BilledCost,EffectiveCost,BillingCurrency,Tags,x_Owner\n")
	for _, sub := range subAccounts {
		fmt.Fprintf(&b, "%s,%s,AWS,%s-focus,Compute,%sT00:00:00Z,2025-01-01 00:00:00,%s,%s,USD,\"{\"\"owner\"\":\"\"%s\"\"}\",%s\n",
			billingAccount, sub, slug, day1, amount, amount, slug, slug)
	}
	return b.String()
}

func (h *holdings) accountIDs() []string {
	out := make([]string, len(h.accounts))
	for i, a := range h.accounts {
		out[i] = a["id"].(string)
	}
	slices.Sort(out)
	return out
}

// seed makes t's data through the API: three accounts (external ids shared
// with the other tenant, so unique keys are seen to be per tenant), two
// cost items per account — JSON and CSV, under an idempotency key — and
// two budgets, one scoped to an account, named as the other tenant's are.
// n (0 or 1) picks the tenant's amounts, so that sums reveal a foreign row.
func (s *suite) seed(tb testing.TB, t apitest.Tenant, n int) *holdings {
	tb.Helper()
	h := &holdings{tenant: t, amount: []string{"1.250000", "1000.000001"}[n], rows: map[string]int{},
		idempotencyKey: "conformance-" + t.Slug, billingAccount: "ba-" + t.Slug}
	for i := range 3 {
		a := s.must(tb, t, 201, "POST", "/v1/accounts", map[string]any{
			"provider": "aws", "external_id": fmt.Sprintf("shared-%d", i), "name": t.Slug + " account",
		}).Map(tb)
		h.accounts = append(h.accounts, a)
	}
	var items []map[string]any
	csv := "account_id,service,usage_date,amount,currency\n"
	for _, a := range h.accounts {
		items = append(items, map[string]any{"account_id": a["id"], "service": t.Slug + "-compute", "usage_date": day1, "amount": h.amount, "currency": "USD"})
		csv += fmt.Sprintf("%s,%s-storage,%s,%s,USD\n", a["id"], t.Slug, day2, h.amount)
	}
	// A FOCUS dataset too: its sub accounts are the accounts above (same
	// provider, same external ids), so it creates none.
	importID := uuid.NewString()
	h.imports = append(h.imports, importID)
	focus := focusDataset(t.Slug, h.billingAccount, h.amount, []string{"shared-0", "shared-1", "shared-2"})
	for _, r := range []*apitest.Response{
		s.do(tb, t.Editor, "POST", "/v1/costs", items, nil, "Idempotency-Key", h.idempotencyKey),
		s.do(tb, t.Editor, "POST", "/v1/costs", csv, nil, "Content-Type", "text/csv"),
		s.do(tb, t.Editor, "POST", "/v1/costs", focus, nil, "Content-Type", "text/csv", "Import-Id", importID),
	} {
		if r.Status != 201 {
			tb.Fatalf("seed %s's costs: %s", t.Slug, r)
		}
	}
	for _, c := range s.listAll(tb, h, "/v1/costs", "", nil, nil) {
		var item costItem
		if err := jsonUnmarshal(c, &item); err != nil {
			tb.Fatal(err)
		}
		if !strings.HasPrefix(item.Service, t.Slug+"-") {
			tb.Errorf("LEAK: %s's own cost list holds a foreign item %+v", t.Slug, item)
			continue
		}
		h.costs = append(h.costs, item)
	}
	if len(h.costs) != 3*len(h.accounts) {
		tb.Fatalf("%s ingested %d cost items, lists %d of its own", t.Slug, 3*len(h.accounts), len(h.costs))
	}
	for _, b := range []map[string]any{
		{"name": "shared-budget", "amount": "100", "currency": "USD", "period": "monthly"},
		{"name": "account-budget", "amount": "50", "currency": "USD", "period": "monthly", "account_id": h.accounts[0]["id"]},
	} {
		h.budgets = append(h.budgets, s.must(tb, t, 201, "POST", "/v1/budgets", b).Map(tb))
	}
	h.rows["accounts"], h.rows["cost_items"], h.rows["budgets"], h.rows["idempotency_keys"], h.rows["cost_imports"] = 3, len(h.costs), 2, 1, 1
	return h
}

// snapshot reads everything of h's tenant through its own viewer key,
// status and body keyed by path: the victim's view, compared before and
// after an attack.
func (s *suite) snapshot(tb testing.TB, h *holdings) map[string]string {
	tb.Helper()
	out := map[string]string{}
	read := func(path string) {
		out[path] = s.do(tb, h.tenant.Viewer, "GET", path, nil, nil).String()
	}
	read("/v1/accounts?limit=1000")
	for _, a := range h.accounts {
		read("/v1/accounts/" + a["id"].(string))
	}
	read("/v1/costs?limit=1000")
	read("/v1/costs/summary?group_by=account")
	read("/v1/costs/summary?group_by=tag:owner&metric=effective_cost")
	read("/v1/costs/imports?limit=1000")
	for _, id := range h.imports {
		read("/v1/costs/imports/" + id)
	}
	read("/v1/budgets?limit=1000")
	for _, b := range h.budgets {
		read("/v1/budgets/" + b["id"].(string) + "?at=" + budgetDay)
	}
	return out
}

func (s *suite) attackAccounts(t *testing.T, self, other *holdings) {
	t.Helper()
	var theirs []string
	for _, a := range other.accounts {
		theirs = append(theirs, "/v1/accounts/"+a["id"].(string))
	}
	s.attackPaths(t, self, other, "/v1/accounts/", theirs, []string{"GET", "PATCH", "DELETE"})
	// Lists show exactly the attacker's own accounts, with or without
	// parameters and headers that name the other tenant.
	for _, n := range naming(other) {
		if got := ids(t, s.listAll(t, self, "/v1/accounts", n.query, n.header, other)); !slices.Equal(got, self.accountIDs()) {
			t.Errorf("%s lists accounts %v (query %q, headers %v), want its own %v", self.tenant.Slug, got, n.query, n.header, self.accountIDs())
		}
	}
	// Bodies cannot name the other tenant, nor move a row to it.
	if r := s.request(t, self.tenant, "POST", "/v1/accounts", map[string]any{
		"tenant_id": other.tenant.ID, "provider": "gcp", "external_id": "planted", "name": "planted",
	}, other); r.Status < 300 {
		t.Errorf("POST /v1/accounts accepted a tenant_id: %s", r)
	}
	mine := "/v1/accounts/" + self.accounts[0]["id"].(string)
	for _, body := range []map[string]any{
		{"tenant_id": other.tenant.ID},
		{"id": other.accounts[0]["id"]},
	} {
		if r := s.request(t, self.tenant, "PATCH", mine, body, other); r.Status < 300 {
			t.Errorf("PATCH %s accepted %v: %s", mine, body, r)
		}
	}
	// Unique keys are per tenant: the other tenant's provider and external
	// id are free, so a conflict cannot probe for them.
	probe := map[string]any{"provider": "azure", "external_id": "probe-" + other.tenant.Slug, "name": "probe"}
	theirProbe := s.must(t, other.tenant, 201, "POST", "/v1/accounts", probe).Map(t)
	mineProbe := s.request(t, self.tenant, "POST", "/v1/accounts", probe, other)
	if mineProbe.Status != 201 {
		t.Errorf("%s creating an account with %s's provider and external id: %s, want 201", self.tenant.Slug, other.tenant.Slug, mineProbe)
	} else {
		s.must(t, self.tenant, 204, "DELETE", "/v1/accounts/"+mineProbe.Map(t)["id"].(string), nil)
	}
	s.must(t, other.tenant, 204, "DELETE", "/v1/accounts/"+theirProbe["id"].(string), nil)
	// A viewer key of the attacker cannot write either side.
	if r := s.do(t, self.tenant.Viewer, "DELETE", theirs[0], nil, other); r.Status < 300 {
		t.Errorf("LEAK: a viewer of %s deleted %s's account: %s", self.tenant.Slug, other.tenant.Slug, r)
	}
}

func (s *suite) attackCosts(t *testing.T, self, other *holdings) {
	t.Helper()
	// References: a cost item naming the other tenant's account is refused,
	// alone or beside a valid one, as JSON or CSV, and nothing is written.
	mineAcct, theirAcct := self.accounts[0]["id"].(string), other.accounts[0]["id"].(string)
	item := func(acct string) map[string]any {
		return map[string]any{"account_id": acct, "service": self.tenant.Slug + "-planted", "usage_date": day1, "amount": "7", "currency": "USD"}
	}
	for _, body := range []any{
		[]map[string]any{item(theirAcct)},
		[]map[string]any{item(mineAcct), item(theirAcct)},
		"account_id,service,usage_date,amount,currency\n" + theirAcct + "," + self.tenant.Slug + "-planted," + day1 + ",7,USD\n",
	} {
		var header []string
		if _, csv := body.(string); csv {
			header = []string{"Content-Type", "text/csv"}
		}
		r := s.request(t, self.tenant, "POST", "/v1/costs", body, other, header...)
		if r.Status < 300 {
			t.Errorf("LEAK: %s ingested a cost item on %s's account %s: %s", self.tenant.Slug, other.tenant.Slug, theirAcct, r)
		} else if r.Status != 422 {
			t.Errorf("ingesting a cost item on another tenant's account: %s, want 422", r)
		}
	}
	// Filters: the other tenant's account filters to nothing, and lists and
	// summaries show the attacker's own items only, whatever names the
	// other tenant.
	r := s.request(t, self.tenant, "GET", "/v1/costs?account_id="+theirAcct, nil, other)
	if r.Status == 200 {
		var page struct{ Items []costItem }
		r.JSON(t, &page)
		if len(page.Items) != 0 {
			t.Errorf("LEAK: %s filtering costs by %s's account sees %d items", self.tenant.Slug, other.tenant.Slug, len(page.Items))
		}
	} else if r.Status != 404 && r.Status != 422 && r.Status != 400 {
		t.Errorf("GET /v1/costs?account_id=<another tenant's account>: %s", r)
	}
	for _, n := range append(naming(other), struct {
		query  string
		header []string
	}{"from=2000-01-01&to=2100-01-01", nil}) {
		for _, raw := range s.listAll(t, self, "/v1/costs", n.query, n.header, other) {
			var c costItem
			if err := jsonUnmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.Service, self.tenant.Slug+"-") || !slices.Contains(self.accountIDs(), c.AccountID) || c.Amount == other.amount {
				t.Errorf("LEAK: %s's cost list (query %q, headers %v) holds a foreign item %+v", self.tenant.Slug, n.query, n.header, c)
			}
		}
	}
	want := new(big.Rat)
	for _, c := range self.costs {
		want.Add(want, rat(t, c.Amount))
	}
	for _, group := range []string{"service", "account", "day"} {
		for _, n := range naming(other) {
			q := "group_by=" + group + "&from=2000-01-01&to=2100-01-01"
			if n.query != "" {
				q += "&" + n.query
			}
			r := s.request(t, self.tenant, "GET", "/v1/costs/summary?"+q, nil, other, n.header...)
			if r.Status != 200 {
				t.Fatalf("GET /v1/costs/summary?%s: %s", q, r)
			}
			var sum struct {
				Items []struct{ Key, Amount, Currency string }
			}
			r.JSON(t, &sum)
			got := new(big.Rat)
			for _, it := range sum.Items {
				got.Add(got, rat(t, it.Amount))
				if group == "account" && !slices.Contains(self.accountIDs(), it.Key) {
					t.Errorf("LEAK: %s's summary by account has a foreign key %s", self.tenant.Slug, it.Key)
				}
				if group == "service" && !strings.HasPrefix(it.Key, self.tenant.Slug+"-") {
					t.Errorf("LEAK: %s's summary by service has a foreign key %s", self.tenant.Slug, it.Key)
				}
			}
			if got.Cmp(want) != 0 {
				t.Errorf("LEAK: %s's costs summed by %s (query %q) are %s, its own are %s", self.tenant.Slug, group, q, got.FloatString(6), want.FloatString(6))
			}
		}
	}
	// Idempotency keys are per tenant: the other tenant's key, sent with
	// another body, neither replays its answer nor conflicts with it.
	r = s.request(t, self.tenant, "POST", "/v1/costs", []map[string]any{item(mineAcct)}, other, "Idempotency-Key", other.idempotencyKey)
	switch {
	case r.Header.Get("Idempotent-Replayed") != "":
		t.Errorf("LEAK: %s's request with %s's idempotency key replayed its answer: %s", self.tenant.Slug, other.tenant.Slug, r)
	case r.Status != 201:
		t.Errorf("%s ingesting with %s's idempotency key: %s, want 201", self.tenant.Slug, other.tenant.Slug, r)
	default:
		self.rows["cost_items"]++
		self.rows["idempotency_keys"]++
		// The item is the attacker's own; it counts toward its sums from now.
		self.costs = append(self.costs, costItem{Amount: "7.000000"})
	}
	s.attackFOCUS(t, self, other)
}

// attackFOCUS loads datasets naming the other tenant: its billing account
// and period (restated), its import id, sub accounts that exist in both
// tenants. The rows are the attacker's own, in its own accounts; nothing
// of the other tenant is replaced, and its imports stay out of reach.
func (s *suite) attackFOCUS(t *testing.T, self, other *holdings) {
	t.Helper()
	s.attackPaths(t, self, other, "/v1/costs/imports/", []string{"/v1/costs/imports/" + other.imports[0]}, []string{"GET"})
	for _, n := range naming(other) {
		r := s.request(t, self.tenant, "GET", "/v1/costs/imports?"+n.query, nil, other, n.header...)
		var page struct {
			Items []struct{ ID string }
		}
		r.JSON(t, &page)
		own := self.imports
		if r.Status != 200 || len(page.Items) != len(own) {
			t.Errorf("%s lists %d imports (query %q, headers %v), want its own %d: %s", self.tenant.Slug, len(page.Items), n.query, n.header, len(own), r)
		}
		for _, it := range page.Items {
			if !slices.Contains(own, it.ID) {
				t.Errorf("LEAK: %s lists the import %s", self.tenant.Slug, it.ID)
			}
		}
	}
	// A restatement of the other tenant's billing account and period:
	// nothing of the other tenant goes. (That another tenant's import id is
	// free, not a 409 telling it exists, is app/httpapi's test: the answer
	// would name the id.)
	focus := focusDataset(self.tenant.Slug, other.billingAccount, self.amount, []string{"shared-1"})
	importID := uuid.NewString()
	r := s.request(t, self.tenant, "POST", "/v1/costs?replace=billing_period", focus, other,
		"Content-Type", "text/csv", "Import-Id", importID)
	var res struct {
		Inserted        int `json:"inserted"`
		Replaced        int `json:"replaced"`
		AccountsCreated int `json:"accounts_created"`
	}
	if r.Status != 201 {
		t.Fatalf("%s loading a dataset naming %s's billing account: %s, want 201", self.tenant.Slug, other.tenant.Slug, r)
	}
	r.JSON(t, &res)
	if res.Inserted != 1 || res.Replaced != 0 || res.AccountsCreated != 0 {
		t.Errorf("LEAK: %s's restatement of %s's billing period: %s", self.tenant.Slug, other.tenant.Slug, r)
	}
	self.imports = append(self.imports, importID)
	self.costs = append(self.costs, costItem{Amount: self.amount})
	self.rows["cost_items"]++
	self.rows["cost_imports"]++
	// The row is on the attacker's own account, of the same external id.
	mine := s.request(t, self.tenant, "GET", "/v1/costs?billing_account="+other.billingAccount, nil, other)
	var page struct{ Items []costItem }
	mine.JSON(t, &page)
	if len(page.Items) != 1 || !slices.Contains(self.accountIDs(), page.Items[0].AccountID) {
		t.Errorf("LEAK: %s's row of %s's billing account: %s", self.tenant.Slug, other.tenant.Slug, mine)
	}
}

func (s *suite) attackBudgets(t *testing.T, self, other *holdings) {
	t.Helper()
	var theirs []string
	for _, b := range other.budgets {
		theirs = append(theirs, "/v1/budgets/"+b["id"].(string))
	}
	s.attackPaths(t, self, other, "/v1/budgets/", theirs, []string{"GET", "DELETE"})
	// Spending counts the attacker's own costs only (all of them fall in
	// the budgets' month).
	var wantSpent big.Rat
	for _, c := range self.costs {
		wantSpent.Add(&wantSpent, rat(t, c.Amount))
	}
	b := s.request(t, self.tenant, "GET", "/v1/budgets/"+self.budgets[0]["id"].(string)+"?at="+budgetDay, nil, other)
	if b.Status != 200 {
		t.Fatalf("GET own budget: %s", b)
	}
	if spent := rat(t, fmt.Sprint(b.Map(t)["spent"])); spent.Cmp(&wantSpent) != 0 {
		t.Errorf("LEAK: %s's budget counts %s spent, its own costs are %s", self.tenant.Slug, spent.FloatString(6), wantSpent.FloatString(6))
	}
	var want []string
	for _, b := range self.budgets {
		want = append(want, b["id"].(string))
	}
	slices.Sort(want)
	for _, n := range naming(other) {
		if got := ids(t, s.listAll(t, self, "/v1/budgets", n.query, n.header, other)); !slices.Equal(got, want) {
			t.Errorf("%s lists budgets %v (query %q, headers %v), want its own %v", self.tenant.Slug, got, n.query, n.header, want)
		}
	}
	// A budget scoped to the other tenant's account is refused; one named
	// like the other tenant's is not a conflict.
	r := s.request(t, self.tenant, "POST", "/v1/budgets", map[string]any{
		"name": "planted", "amount": "1", "currency": "USD", "period": "monthly", "account_id": other.accounts[0]["id"],
	}, other)
	if r.Status < 300 {
		t.Errorf("LEAK: %s created a budget on %s's account: %s", self.tenant.Slug, other.tenant.Slug, r)
	} else if r.Status != 422 {
		t.Errorf("a budget on another tenant's account: %s, want 422", r)
	}
	probe := map[string]any{"name": "probe-" + other.tenant.Slug, "amount": "1", "currency": "USD", "period": "yearly"}
	theirProbe := s.must(t, other.tenant, 201, "POST", "/v1/budgets", probe).Map(t)
	dup := s.request(t, self.tenant, "POST", "/v1/budgets", probe, other)
	if dup.Status != 201 {
		t.Errorf("%s creating a budget named as %s's: %s, want 201", self.tenant.Slug, other.tenant.Slug, dup)
	} else {
		s.must(t, self.tenant, 204, "DELETE", "/v1/budgets/"+dup.Map(t)["id"].(string), nil)
	}
	s.must(t, other.tenant, 204, "DELETE", "/v1/budgets/"+theirProbe["id"].(string), nil)
}

func (s *suite) attackConsolidated(t *testing.T, self, other *holdings) {
	t.Helper()
	base := "/v1/consolidated/costs/summary?group_by=service&from=2000-01-01&to=2100-01-01&tenants="
	missing := s.request(t, self.tenant, "GET", base+"no-such-tenant", nil, other)
	if missing.Status != 404 {
		t.Fatalf("a consolidated summary of a missing tenant: %s, want 404", missing)
	}
	// The key was granted nothing: the other tenant, alone or beside the
	// key's own, is as missing as a tenant that does not exist.
	notFound := strings.ReplaceAll(problemDetail(missing), "no-such-tenant", "X")
	for _, tenants := range []string{other.tenant.Slug, self.tenant.Slug + "," + other.tenant.Slug, other.tenant.Slug + "," + self.tenant.Slug} {
		r := s.request(t, self.tenant, "GET", base+tenants, nil, other)
		switch {
		case r.Status < 300:
			t.Errorf("LEAK: %s's consolidated summary of %s answered %s", self.tenant.Slug, tenants, r)
		case r.Status != 404:
			t.Errorf("a consolidated summary of %s without a grant: %s, want 404", tenants, r)
		case strings.ReplaceAll(problemDetail(r), other.tenant.Slug, "X") != notFound:
			t.Errorf("an existing tenant without a grant is told apart from a missing one: %q vs %q", problemDetail(r), problemDetail(missing))
		}
	}
	// The key's own tenant alone: its own totals, nothing else.
	r := s.request(t, self.tenant, "GET", base+self.tenant.Slug, nil, other)
	if r.Status != 200 {
		t.Fatalf("a consolidated summary of the key's own tenant: %s", r)
	}
	var sum struct {
		Items []struct{ Key, Amount string }
	}
	r.JSON(t, &sum)
	got, want := new(big.Rat), new(big.Rat)
	for _, it := range sum.Items {
		got.Add(got, rat(t, it.Amount))
		if !strings.HasPrefix(it.Key, self.tenant.Slug+"-") {
			t.Errorf("LEAK: %s's consolidated summary has a foreign key %s", self.tenant.Slug, it.Key)
		}
	}
	for _, c := range self.costs {
		want.Add(want, rat(t, c.Amount))
	}
	if got.Cmp(want) != 0 {
		t.Errorf("LEAK: %s's consolidated summary sums %s, its own costs are %s", self.tenant.Slug, got.FloatString(6), want.FloatString(6))
	}
}

// attackWithGrant grants a new key of self read access to other for
// consolidated reports — the one sanctioned way across — and shows that
// the grant opens nothing else: paths, lists, filters and references of
// the other tenant stay out of reach for that key. The key is revoked
// afterwards.
func (s *suite) attackWithGrant(t *testing.T, self, other *holdings) {
	t.Helper()
	ctx := context.Background()
	k, err := s.env.Control.CreateKey(ctx, self.tenant.Slug, auth.Editor)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.env.Control.RevokeKey(ctx, k.ID); err != nil {
			t.Error(err)
		}
	}()
	if err := s.env.Control.GrantKey(ctx, k.ID, other.tenant.Slug); err != nil {
		t.Fatal(err)
	}
	granted := self.tenant
	granted.Editor = k.Key
	r := s.request(t, granted, "GET", "/v1/consolidated/costs/summary?group_by=service&from=2000-01-01&to=2100-01-01&tenants="+self.tenant.Slug+","+other.tenant.Slug, nil, other)
	if r.Status != 200 {
		t.Fatalf("a granted consolidated summary: %s", r)
	}
	for _, path := range []string{"/v1/accounts/" + other.accounts[0]["id"].(string), "/v1/budgets/" + other.budgets[0]["id"].(string)} {
		if r := s.request(t, granted, "GET", path, nil, other); r.Status != 404 {
			t.Errorf("LEAK: a key granted consolidated reads of %s reads %s: %s", other.tenant.Slug, path, r)
		}
	}
	if got := ids(t, s.listAll(t, &holdings{tenant: granted}, "/v1/accounts", "", nil, other)); !slices.Equal(got, self.accountIDs()) {
		t.Errorf("LEAK: a key granted consolidated reads of %s lists accounts %v, want its own %v", other.tenant.Slug, got, self.accountIDs())
	}
	r = s.request(t, granted, "GET", "/v1/costs?limit=1000&account_id="+other.accounts[0]["id"].(string), nil, other)
	if r.Status == 200 && strings.Contains(string(r.Body), `"account_id"`) {
		t.Errorf("LEAK: a key granted consolidated reads of %s filters its costs: %s", other.tenant.Slug, r)
	}
	r = s.request(t, granted, "POST", "/v1/costs", []map[string]any{{"account_id": other.accounts[0]["id"], "service": self.tenant.Slug + "-planted",
		"usage_date": day1, "amount": "7", "currency": "USD"}}, other)
	if r.Status < 300 {
		t.Errorf("LEAK: a key granted consolidated reads of %s wrote a cost on its account: %s", other.tenant.Slug, r)
	}
}

// attackPaths sends each method to each of the other tenant's paths as
// self: each must be 404, told apart in nothing from a missing id (prefix
// plus the nil UUID).
func (s *suite) attackPaths(t *testing.T, self, other *holdings, prefix string, theirs, methods []string) {
	t.Helper()
	missing := s.request(t, self.tenant, "GET", prefix+uuid.Nil.String(), nil, other)
	if missing.Status != 404 {
		t.Fatalf("GET %s<missing>: %s, want 404", prefix, missing)
	}
	notFound := problemDetail(missing)
	for _, path := range theirs {
		for _, method := range methods {
			var body any
			if method == "PATCH" {
				body = map[string]any{"name": "pwned"}
			}
			r := s.request(t, self.tenant, method, path, body, other)
			switch {
			case r.Status < 300:
				t.Errorf("LEAK: %s %s of %s's resource answered %s", method, path, other.tenant.Slug, r)
			case r.Status != 404:
				t.Errorf("%s %s of another tenant's resource: %s, want 404", method, path, r)
			case problemDetail(r) != notFound:
				t.Errorf("%s of another tenant's resource is told apart from a missing one: %q vs %q", method, problemDetail(r), notFound)
			}
		}
	}
}

// naming lists query strings and headers that name the other tenant; none
// may change what the attacker sees.
func naming(other *holdings) []struct {
	query  string
	header []string
} {
	return []struct {
		query  string
		header []string
	}{
		{"", nil},
		{"tenant_id=" + other.tenant.ID.String() + "&tenant=" + other.tenant.Slug, nil},
		{"", []string{"X-Tenant-ID", other.tenant.ID.String(), "X-Tenant", other.tenant.Slug}},
	}
}

// listAll pages through path with limit=1 and returns the raw items.
func (s *suite) listAll(tb testing.TB, self *holdings, path, query string, header []string, other *holdings) []string {
	tb.Helper()
	var items []string
	cursor := ""
	for range 1000 {
		q, err := url.ParseQuery(query)
		if err != nil {
			tb.Fatal(err)
		}
		q.Set("limit", "1")
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := s.do(tb, self.tenant.Editor, "GET", path+"?"+q.Encode(), nil, other, header...)
		if r.Status != 200 {
			tb.Fatalf("GET %s?%s: %s", path, q.Encode(), r)
		}
		var page struct {
			Items      []rawJSON `json:"items"`
			NextCursor *string   `json:"next_cursor"`
		}
		r.JSON(tb, &page)
		for _, it := range page.Items {
			items = append(items, string(it))
		}
		if page.NextCursor == nil {
			return items
		}
		cursor = *page.NextCursor
	}
	tb.Fatalf("GET %s: more than 1000 pages", path)
	return nil
}

// ids returns the sorted ids of raw JSON items.
func ids(tb testing.TB, items []string) []string {
	tb.Helper()
	out := make([]string, 0, len(items))
	for _, raw := range items {
		var it struct{ ID string }
		if err := jsonUnmarshal(raw, &it); err != nil {
			tb.Fatal(err)
		}
		out = append(out, it.ID)
	}
	slices.Sort(out)
	return out
}

func rat(tb testing.TB, s string) *big.Rat {
	tb.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		tb.Fatalf("not a decimal: %q", s)
	}
	return r
}

type rawJSON = json.RawMessage

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
