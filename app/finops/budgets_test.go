package finops

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

// oneReadRunner runs work through the RLS strategy (under
// isolation.OneRead: the BEGIN, the binding, the one statement and the
// COMMIT in one pipeline, and a second statement refused), and counts
// the runs and the one-reads among them.
type oneReadRunner struct {
	inner          isolation.Strategy
	runs, oneReads atomic.Int32
}

func (r *oneReadRunner) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, _ ...isolation.RunOption) error {
	r.runs.Add(1)
	if isolation.IsOneRead(ctx) {
		r.oneReads.Add(1)
	}
	return r.inner.Run(ctx, t, fn)
}

// A budget's read is one statement sent as a one-statement read (one round
// trip, and the schema strategy's per-tenant prepared statement), and it
// totals the right items for every kind of scope and period: what the
// budget read as two statements (the budget, then its sum with the scope
// as parameters) returned. Each scope's sum is led by the index that
// serves it even in the statement's generic plan, which knows no scope.
func TestBudgetReadIsOneStatement(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newPlanData(t, 3000, 92, 50)
	account := func(k int) uuid.UUID {
		var id uuid.UUID
		if err := d.admin.QueryRow(ctx, `SELECT md5($1::text || $2::text)::uuid`, d.big, strconv.Itoa(k)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	acct := account(2)
	budgets := []struct {
		name, period string
		account      *uuid.UUID
		service      *string
		provider     *string
		tagKey, tag  *string
		// where is the scope as a filter of cost_items c, for the sum
		// the test computes itself.
		where string
	}{
		{name: "everything", period: Monthly, where: "true"},
		{name: "one account", period: Monthly, account: &acct, where: "c.account_id = '" + acct.String() + "'"},
		{name: "one service", period: Quarterly, service: ptr("svc-3"), where: "c.service = 'svc-3'"},
		{name: "one provider", period: Yearly, provider: ptr("azure"),
			where: "c.account_id IN (SELECT a.id FROM accounts a WHERE a.tenant_id = c.tenant_id AND a.provider = 'azure')"},
		{name: "one tag value", period: Monthly, tagKey: ptr("team"), tag: ptr("t1"), where: "c.tags ->> 'team' = 't1'"},
		{name: "account and service", period: Quarterly, account: &acct, service: ptr("svc-4"),
			where: "c.account_id = '" + acct.String() + "' AND c.service = 'svc-4'"},
	}
	r := &oneReadRunner{inner: rls.New(d.app, nil)}
	s := New(r)
	tn := isolation.Tenant{ID: d.big, Strategy: isolation.RLS}
	at := time.Date(2026, 11, 20, 15, 0, 0, 0, time.UTC)
	for _, b := range budgets {
		id := uuid.New()
		if _, err := d.admin.Exec(ctx, `
			INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id, service, provider, tag_key, tag_value)
			VALUES ($1, $2, $3, 1000, 'USD', $4, $5, $6, $7, $8, $9)`,
			d.big, id, b.name, b.period, b.account, b.service, b.provider, b.tagKey, b.tag); err != nil {
			t.Fatal(err)
		}
		first, last := PeriodOf(b.period, at)
		var want string
		if err := d.admin.QueryRow(ctx, `SELECT COALESCE(sum(c.amount), 0)::text FROM cost_items c
			WHERE c.tenant_id = $1 AND c.currency = 'USD' AND c.usage_date BETWEEN $2 AND $3 AND `+b.where,
			d.big, first, last).Scan(&want); err != nil {
			t.Fatal(err)
		}
		runs := r.runs.Load()
		st, err := s.Budget(ctx, tn, id, at)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		if got := r.runs.Load() - runs; got != 1 {
			t.Errorf("%s: %d transactions, want 1", b.name, got)
		}
		wantSpent, err := parseStoredAmount(want)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Spent.Equal(wantSpent) || !st.PeriodStart.Equal(first) || !st.PeriodEnd.Equal(last) {
			t.Errorf("%s: spent %s in %s..%s, want %s in %s..%s", b.name, st.Spent, st.PeriodStart, st.PeriodEnd, want, first, last)
		}
		if wantSpent.IsZero() {
			t.Errorf("%s: the data set has no item in the budget's scope; the test would prove nothing", b.name)
		}
	}
	if r.runs.Load() != r.oneReads.Load() {
		t.Errorf("%d of %d budget reads were one-statement reads, want all", r.oneReads.Load(), r.runs.Load())
	}
	if _, err := s.Budget(ctx, tn, uuid.New(), at); err == nil {
		t.Error("a budget that does not exist was found")
	}

	// In the generic plan (as the schema strategy runs a tenant's
	// statements on plain PostgreSQL; not on Citus, whose planner cannot
	// make one of a distributed statement) the sum reads the period's
	// items by the date index, never the tenant's whole table.
	citus, err := isolation.IsCitus(ctx, d.app)
	if err != nil {
		t.Fatal(err)
	}
	if citus {
		return
	}
	var plan planNode
	bound(t, d.app, d.big, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `PREPARE budget_read AS `+budgetRead); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
			return err
		}
		var js []byte
		if err := tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON, COSTS OFF) EXECUTE budget_read($1, $2, $3, $4, $5, $6, $7, $8)`,
			pgx.QueryExecModeSimpleProtocol, d.big, uuid.New(), at, at, at, at, at, at).Scan(&js); err != nil {
			return err
		}
		var out []struct{ Plan planNode }
		if err := json.Unmarshal(js, &out); err != nil {
			return err
		}
		plan = out[0].Plan
		return nil
	})
	onCosts := func(n planNode) bool { return n.Relation == "cost_items" }
	byDate := func(n planNode) bool { return onCosts(n) && n.Index == "cost_items_date_idx" }
	if plan.count(onCosts) != 1 || plan.count(byDate) != 1 {
		t.Errorf("the budget read's generic plan does not read cost_items once, by the date index:\n%s", plan)
	}
}

func ptr[T any](v T) *T { return &v }
