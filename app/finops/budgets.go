package finops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Budget periods: UTC calendar months, quarters and years.
const (
	Monthly   = "monthly"
	Quarterly = "quarterly"
	Yearly    = "yearly"
)

// Periods are the budget periods.
var Periods = []string{Monthly, Quarterly, Yearly}

// PeriodOf returns the first and last day of the calendar period of kind
// period (Monthly, Quarterly or Yearly) that contains the UTC day of at.
func PeriodOf(period string, at time.Time) (start, end time.Time) {
	y, m, _ := at.UTC().Date()
	switch period {
	case Monthly:
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, -1)
	case Quarterly:
		start = time.Date(y, (m-1)/3*3+1, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 3, -1)
	default:
		start = time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(1, 0, -1)
	}
}

// Budget is an amount a tenant means to spend per period, in one currency,
// optionally only on one account, one service, one provider and/or one tag
// value.
type Budget struct {
	ID        uuid.UUID
	Name      string
	Amount    decimal.Decimal
	Currency  string
	Period    string
	AccountID *uuid.UUID
	Service   *string
	// Provider scopes the budget to the accounts of one provider (aws,
	// azure, gcp, or a FOCUS provider such as oracle).
	Provider *string
	// TagKey and TagValue scope the budget to items whose Tags hold
	// TagKey with TagValue; both or neither are set.
	TagKey, TagValue *string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// BudgetStatus is a budget with what was spent in one of its periods.
type BudgetStatus struct {
	Budget
	// PeriodStart and PeriodEnd are the period's first and last day.
	PeriodStart, PeriodEnd time.Time
	// Spent totals the period's cost items in the budget's currency and
	// scope; Remaining is Amount - Spent, negative when over budget.
	Spent, Remaining decimal.Decimal
}

// BudgetInput is a new budget as the client sent it: Amount is a JSON
// number or string, AccountID a UUID's text, both parsed here.
type BudgetInput struct {
	Name      string
	Amount    json.RawMessage
	Currency  string
	Period    string
	AccountID *string
	Service   *string
	Provider  *string
	TagKey    *string
	TagValue  *string
}

// parse validates in, returning every problem as a *store.ValidationError.
func (in BudgetInput) parse() (Budget, error) {
	var errs fieldErrors
	b := Budget{Name: strings.TrimSpace(in.Name), Period: in.Period}
	if msg := store.CheckText(b.Name); msg != "" {
		errs.add("name", msg)
	}
	var msg string
	if b.Amount, msg = ParseAmountJSON(in.Amount); msg != "" {
		errs.add("amount", msg)
	} else if !b.Amount.IsPositive() {
		errs.add("amount", "must be greater than 0")
	}
	if b.Currency, msg = parseCurrency(in.Currency); msg != "" {
		errs.add("currency", msg)
	}
	switch in.Period {
	case Monthly, Quarterly, Yearly:
	case "":
		errs.add("period", "required")
	default:
		errs.add("period", `must be one of "monthly", "quarterly", "yearly"`)
	}
	if in.AccountID != nil {
		id, err := uuid.Parse(strings.TrimSpace(*in.AccountID))
		if err != nil || id == uuid.Nil {
			errs.add("account_id", "must be the id (a UUID) of one of your accounts")
		}
		b.AccountID = &id
	}
	if in.Service != nil {
		s := strings.TrimSpace(*in.Service)
		if msg := store.CheckText(s); msg != "" {
			errs.add("service", msg)
		}
		b.Service = &s
	}
	if in.Provider != nil {
		p := NormalizeProvider(*in.Provider)
		if p == "" || utf8.RuneCountInString(p) > 100 {
			errs.add("provider", "must be a provider name such as aws, azure or gcp (at most 100 characters)")
		}
		b.Provider = &p
	}
	switch {
	case (in.TagKey == nil) != (in.TagValue == nil):
		errs.add("tag_key", "tag_key and tag_value go together")
	case in.TagKey != nil:
		if _, err := ParseTagFilter(*in.TagKey + "=" + *in.TagValue); err != nil || strings.Contains(*in.TagKey, "=") {
			errs.add("tag_key", "must be 1-200 characters without \"=\"; tag_value at most 1000")
		}
		b.TagKey, b.TagValue = in.TagKey, in.TagValue
	}
	return b, errs.err()
}

const budgetColumns = `id, name, amount::text, currency, period, account_id, service, provider, tag_key, tag_value, created_at, updated_at`

// scanBudget scans budgetColumns from row, then extra, the columns the
// statement selects after them.
func scanBudget(row pgx.Row, extra ...any) (Budget, error) {
	var (
		b      Budget
		amount string
	)
	dest := append([]any{&b.ID, &b.Name, &amount, &b.Currency, &b.Period, &b.AccountID, &b.Service,
		&b.Provider, &b.TagKey, &b.TagValue, &b.CreatedAt, &b.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return b, err
	}
	var err error
	b.Amount, err = parseStoredAmount(amount)
	return b, err
}

// CreateBudget creates a budget of t and returns it with its current
// period's spending. Invalid input, or an account that is not t's, is a
// *store.ValidationError per field; a name t already uses is a
// *store.ConflictError.
func (s *Service) CreateBudget(ctx context.Context, t isolation.Tenant, in BudgetInput) (BudgetStatus, error) {
	b, err := in.parse()
	if err != nil {
		return BudgetStatus{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return BudgetStatus{}, err
	}
	var out BudgetStatus
	err = s.run(ctx, t, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id, service, provider, tag_key, tag_value)
			VALUES ($1, $2, $3, $4::numeric, $5, $6, $7, $8, $9, $10, $11)`,
			t.ID, id, b.Name, FormatAmount(b.Amount), b.Currency, b.Period, b.AccountID, b.Service, b.Provider, b.TagKey, b.TagValue); err != nil {
			return budgetConstraints.Name(err)
		}
		out, err = readBudget(ctx, tx, t, id, time.Now())
		return err
	})
	var ref *store.ReferenceError
	if errors.As(err, &ref) && ref.Constraint == "budgets_account_fkey" {
		// Another tenant's account is no account at all.
		return BudgetStatus{}, errorsOf("account_id", "no such account")
	}
	if err != nil {
		return BudgetStatus{}, fmt.Errorf("create budget: %w", err)
	}
	return out, nil
}

// budgetConstraints is what the insert of one budget can break (its id is
// new): its name, and its account.
var budgetConstraints = store.Constraints{store.UniqueViolation: "budgets_name_key", store.ForeignKeyViolation: "budgets_account_fkey"}

// Budget returns the budget id of t with its spending in the period that
// contains at, or store.ErrNotFound: one statement (budgetRead), so one
// round trip (read1).
func (s *Service) Budget(ctx context.Context, t isolation.Tenant, id uuid.UUID, at time.Time) (BudgetStatus, error) {
	var out BudgetStatus
	err := s.read1(ctx, t, func(tx pgx.Tx) (err error) {
		out, err = readBudget(ctx, tx, t, id, at)
		return err
	})
	return out, err
}

// budgetRead reads budget $2 of tenant $1 and what its scope spent in its
// period containing a day, in one statement: a tenant's budget read is
// then one round trip, and where statements are a tenant's own (the
// schema strategy's) it is prepared and planned once per connection like
// the other reads, instead of its sum being analysed and planned again at
// every change of tenant. The period is chosen by the budget's among the
// three that contain the day, as PeriodOf computes them: $3 and $4 the
// first and last day of the month, $5 and $6 of the quarter, $7 and $8 of
// the year.
//
// The sum reads the period's items of the tenant (cost_items_date_idx)
// and filters them by the budget's scope, which is known only as the
// statement runs. Three sums, each led by the index of its kind of scope
// (the account's, the service's, the days'), chosen by a CASE, read fewer
// items for a scoped budget of a large tenant, but took five times as
// long to plan (1.5 against 0.3 ms, warm), and a schema tenant's
// statement is planned on each connection that serves it: at 1,000
// tenants that made the bench's budget reads slower, not faster.
const budgetRead = `SELECT ` + budgetColumns + `, (
		SELECT COALESCE(sum(c.amount), 0)::text FROM cost_items c
		WHERE c.tenant_id = $1 AND c.currency = b.currency AND c.usage_date BETWEEN p.period_first AND p.period_last
		  AND (b.account_id IS NULL OR c.account_id = b.account_id)
		  AND (b.service IS NULL OR c.service = b.service)
		  AND (b.provider IS NULL OR c.account_id IN (SELECT a.id FROM accounts a WHERE a.tenant_id = $1 AND a.provider = b.provider))
		  AND (b.tag_key IS NULL OR c.tags ->> b.tag_key = b.tag_value))
	FROM budgets b CROSS JOIN LATERAL (SELECT
		CASE b.period WHEN 'monthly' THEN $3::date WHEN 'quarterly' THEN $5::date ELSE $7::date END AS period_first,
		CASE b.period WHEN 'monthly' THEN $4::date WHEN 'quarterly' THEN $6::date ELSE $8::date END AS period_last) p
	WHERE b.tenant_id = $1 AND b.id = $2`

// readBudget reads budget id of t in tx with its spending in the period
// that contains at (budgetRead).
func readBudget(ctx context.Context, tx pgx.Tx, t isolation.Tenant, id uuid.UUID, at time.Time) (BudgetStatus, error) {
	args := []any{t.ID, id}
	for _, period := range []string{Monthly, Quarterly, Yearly} {
		first, last := PeriodOf(period, at)
		args = append(args, first, last)
	}
	var spent string
	b, err := scanBudget(tx.QueryRow(ctx, budgetRead, args...), &spent)
	if err != nil {
		return BudgetStatus{}, err
	}
	st := BudgetStatus{Budget: b}
	st.PeriodStart, st.PeriodEnd = PeriodOf(b.Period, at)
	if st.Spent, err = parseStoredAmount(spent); err != nil {
		return st, err
	}
	st.Remaining = b.Amount.Sub(st.Spent)
	return st, nil
}

// Budgets returns a page of t's budgets in creation order, and the cursor of
// the next page ("" on the last). They come without spending: see Budget.
func (s *Service) Budgets(ctx context.Context, t isolation.Tenant, p Page) ([]Budget, string, error) {
	out, next, err := idPage(ctx, s, t, p, `SELECT `+budgetColumns+` FROM budgets
		WHERE tenant_id = $1 AND id > $2
		ORDER BY id LIMIT $3`, func(r pgx.Row) (Budget, error) { return scanBudget(r) }, func(b Budget) uuid.UUID { return b.ID })
	if err != nil {
		return nil, "", fmt.Errorf("list budgets: %w", err)
	}
	return out, next, nil
}

// DeleteBudget deletes the budget id of t; store.ErrNotFound when t has no
// such budget.
func (s *Service) DeleteBudget(ctx context.Context, t isolation.Tenant, id uuid.UUID) error {
	return s.run(ctx, t, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM budgets WHERE tenant_id = $1 AND id = $2`, t.ID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}
