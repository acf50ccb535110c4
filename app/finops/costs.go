package finops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// MaxCostsPerIngest bounds the cost items of one ingest.
const MaxCostsPerIngest = 100_000

// ErrTooManyCosts is returned for an ingest of more than MaxCostsPerIngest
// items; nothing is written.
var ErrTooManyCosts = fmt.Errorf("more than %d cost items in one request: split it", MaxCostsPerIngest)

// DateLayout is how dates are written: YYYY-MM-DD.
const DateLayout = time.DateOnly

// MinUsageDate is the first usage date a cost item may have: nothing was
// billed by a cloud before it, and 0001-01-01, which time.Time holds as its
// zero value, is no date a client means.
var MinUsageDate = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// ParseDate parses a YYYY-MM-DD date that exists (no 30 February) into UTC
// midnight.
func ParseDate(s string) (time.Time, bool) {
	d, err := time.Parse(DateLayout, strings.TrimSpace(s))
	return d, err == nil
}

// Cost is a cost line item. The FOCUS fields are those of an item loaded
// from a billing export; an item of the five-column format has them zero.
type Cost struct {
	ID        uuid.UUID
	AccountID uuid.UUID
	Service   string
	// UsageDate is a day, at UTC midnight.
	UsageDate time.Time
	// Amount is the billed cost, exactly as given.
	Amount    decimal.Decimal
	Currency  string
	CreatedAt time.Time

	BillingAccountID                     *string
	BillingPeriodStart, BillingPeriodEnd *time.Time
	ChargePeriodStart, ChargePeriodEnd   *time.Time
	ChargeCategory, ServiceCategory      *string
	RegionID                             *string
	EffectiveCost, ListCost              *decimal.Decimal
	ContractedCost                       *decimal.Decimal
	// Tags is the item's FOCUS Tags, a JSON object, or nil.
	Tags json.RawMessage
	// Focus is every column of the item's dataset row under its FOCUS (or
	// custom) name — the typed ones above included — or nil for an item
	// that came without a dataset.
	Focus map[string]json.RawMessage
}

// CostInput is one cost item to ingest, already parsed.
type CostInput struct {
	// Row names the item in the client's request ("[3]" or "row 5") in
	// error messages; empty means its index, as "[i]".
	Row       string
	AccountID uuid.UUID
	Service   string
	UsageDate time.Time
	Amount    decimal.Decimal
	Currency  string
}

func (c CostInput) row(i int) string {
	if c.Row != "" {
		return c.Row
	}
	return fmt.Sprintf("[%d]", i)
}

// validate checks what parsing cannot have guaranteed for inputs built in
// code: ValidateCostRow, named by the item.
func (c CostInput) validate(row string, errs *fieldErrors) {
	r := c.rowOf()
	r.validate(row, errs)
}

// maxFieldErrors bounds the field errors one request reports.
const maxFieldErrors = 20

// fieldErrors collects validation errors, keeping the first maxFieldErrors
// and counting the rest.
type fieldErrors struct {
	list []error
	more int
}

func (e *fieldErrors) add(field, msg string) {
	if len(e.list) == maxFieldErrors {
		e.more++
		return
	}
	e.list = append(e.list, &store.ValidationError{Field: field, Msg: msg})
}

func (e *fieldErrors) count() int { return len(e.list) + e.more }

// addAll adds every *store.ValidationError err joins.
func (e *fieldErrors) addAll(err error) {
	for _, x := range flattenErrors(err) {
		var v *store.ValidationError
		if errors.As(x, &v) {
			e.add(v.Field, v.Msg)
		}
	}
}

// err returns nil or the errors joined, every one a *store.ValidationError.
func (e *fieldErrors) err() error {
	if e.more > 0 {
		return errors.Join(append(e.list, &store.ValidationError{Field: "body",
			Msg: fmt.Sprintf("%d more errors not listed", e.more)})...)
	}
	return errors.Join(e.list...)
}

// Ingested is the outcome of an ingest.
type Ingested struct {
	Inserted int `json:"inserted"`
	// Replayed is set when an earlier ingest with the same idempotency key
	// and request did the work; this one wrote nothing.
	Replayed bool `json:"-"`
}

// IngestCosts writes items for t, all or nothing, in one transaction. Every
// account must be one of t's: items naming any other are refused with a
// *store.ValidationError per item (the first maxFieldErrors of them), as are
// invalid items, and nothing is written. More than MaxCostsPerIngest items
// is ErrTooManyCosts.
//
// With key set, the ingest is recorded under it in the same transaction: a
// later call with the same key and fingerprint writes nothing and returns
// the first outcome with Replayed set; with another fingerprint it is
// ErrIdempotencyConflict. Concurrent calls with one key wait for each other.
func (s *Service) IngestCosts(ctx context.Context, t isolation.Tenant, items []CostInput, key *IdempotencyKey) (Ingested, error) {
	if len(items) > MaxCostsPerIngest {
		return Ingested{}, ErrTooManyCosts
	}
	var errs fieldErrors
	for i, c := range items {
		c.validate(c.row(i), &errs)
	}
	if err := key.validate(); err != nil {
		return Ingested{}, err
	}
	if err := errs.err(); err != nil {
		return Ingested{}, err
	}
	out := Ingested{Inserted: len(items)}
	createdAt := time.Now()
	err := s.run(ctx, t, func(tx pgx.Tx) error {
		if key != nil {
			replayed, err := claimKey(ctx, tx, t, key, opIngestCosts, &out)
			if err != nil || replayed {
				out.Replayed = replayed
				return err
			}
		}
		if err := checkAccounts(ctx, tx, t, items); err != nil {
			return err
		}
		for start := 0; start < len(items); start += importBatchRows {
			if err := insertItems(ctx, tx, t, items[start:min(start+importBatchRows, len(items))], createdAt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Ingested{}, fmt.Errorf("ingest costs: %w", err)
	}
	return out, nil
}

// checkAccounts refuses items whose account is not one of t's, in one query.
// The accounts found are locked against deletion until the transaction ends.
func checkAccounts(ctx context.Context, tx pgx.Tx, t isolation.Tenant, items []CostInput) error {
	seen := map[uuid.UUID]bool{}
	var ids []uuid.UUID
	for _, c := range items {
		if !seen[c.AccountID] {
			seen[c.AccountID] = true
			ids = append(ids, c.AccountID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `
		SELECT id FROM accounts WHERE tenant_id = $1 AND id = ANY($2)
		ORDER BY id FOR KEY SHARE`, t.ID, ids)
	if err != nil {
		return err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return err
	}
	if len(found) == len(ids) {
		return nil
	}
	exists := make(map[uuid.UUID]bool, len(found))
	for _, id := range found {
		exists[id] = true
	}
	var errs fieldErrors
	for i, c := range items {
		if !exists[c.AccountID] {
			errs.add(c.row(i)+".account_id", "no such account")
		}
	}
	return errs.err()
}

// insertItems inserts items of the five-column format in one statement.
func insertItems(ctx context.Context, tx pgx.Tx, t isolation.Tenant, items []CostInput, createdAt time.Time) error {
	b := newBatch()
	accounts := make([]uuid.UUID, len(items))
	for i, c := range items {
		if err := b.add(c.rowOf(), accountKey{}, ""); err != nil {
			return err
		}
		accounts[i] = c.AccountID
	}
	_, err := insertBatch(ctx, tx, t, b, accounts, createdAt)
	return err
}

// CostFilter selects cost items: between From and To (inclusive days) when
// they are set, and of one account, service, … when those are set. Every
// field set must match.
type CostFilter struct {
	AccountID uuid.UUID
	From, To  time.Time
	// Service, ServiceCategory, BillingAccount, Region and ChargeCategory
	// match the item's FOCUS columns (ServiceName, ServiceCategory,
	// BillingAccountId, RegionId, ChargeCategory); Provider the provider of
	// its account.
	Service, ServiceCategory, Provider, BillingAccount, Region, ChargeCategory string
	// Tags match items whose Tags hold each key with its value.
	Tags []TagFilter
}

// TagFilter selects items whose tag Key has Value.
type TagFilter struct{ Key, Value string }

// ParseTagFilter parses "key=value" (split at the first "=").
func ParseTagFilter(s string) (TagFilter, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || len(k) > 200 || len(v) > 1000 || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return TagFilter{}, ErrBadTagFilter
	}
	return TagFilter{Key: k, Value: v}, nil
}

var (
	// ErrBadRange is returned when a filter's From is after its To.
	ErrBadRange = errors.New("from: must not be after to")
	// ErrBadTagFilter is returned for a tag filter that is not key=value.
	ErrBadTagFilter = errors.New("tag: must be key=value, the key 1-200 characters")
)

// bounds returns the filter's days, open ends replaced by the extremes.
func (f CostFilter) bounds() (time.Time, time.Time, error) {
	from, to := f.From, f.To
	if from.IsZero() {
		from = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if to.IsZero() {
		to = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	}
	if from.After(to) {
		return from, to, ErrBadRange
	}
	return from, to, nil
}

// conditions appends to sql the conditions of f other than the dates, on
// cost_items as c (and accounts as a when f.Provider is set: the caller
// joins it), with their values in args. Only fixed text reaches sql.
func (f CostFilter) conditions(sql *strings.Builder, args *[]any) {
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	eq := func(col, v string) {
		if v != "" {
			sql.WriteString(" AND " + col + " = " + arg(v))
		}
	}
	if f.AccountID != uuid.Nil {
		sql.WriteString(" AND c.account_id = " + arg(f.AccountID))
	}
	eq("c.service", f.Service)
	eq("c.service_category", f.ServiceCategory)
	eq("a.provider", f.Provider)
	eq("c.billing_account_id", f.BillingAccount)
	eq("c.region_id", f.Region)
	eq("c.charge_category", f.ChargeCategory)
	for _, tf := range f.Tags {
		sql.WriteString(" AND c.tags ->> " + arg(tf.Key) + " = " + arg(tf.Value))
	}
}

// costColumns are what a listing reads of c (cost_items).
const costColumns = `c.id, c.account_id, c.service, c.usage_date, c.amount::text, c.currency, c.created_at,
	c.billing_account_id, c.billing_period_start, c.billing_period_end, c.charge_period_start, c.charge_period_end,
	c.charge_category, c.service_category, c.region_id, c.effective_cost::text, c.list_cost::text, c.contracted_cost::text,
	c.tags::text, c.focus::text`

func scanCost(row pgx.CollectableRow) (Cost, error) {
	var (
		c                Cost
		amount           string
		eff, list, contr *string
		tags, focus      *string
	)
	if err := row.Scan(&c.ID, &c.AccountID, &c.Service, &c.UsageDate, &amount, &c.Currency, &c.CreatedAt,
		&c.BillingAccountID, &c.BillingPeriodStart, &c.BillingPeriodEnd, &c.ChargePeriodStart, &c.ChargePeriodEnd,
		&c.ChargeCategory, &c.ServiceCategory, &c.RegionID, &eff, &list, &contr, &tags, &focus); err != nil {
		return c, err
	}
	var err error
	if c.Amount, err = parseStoredAmount(amount); err != nil {
		return c, err
	}
	for _, m := range []struct {
		s   *string
		dst **decimal.Decimal
	}{{eff, &c.EffectiveCost}, {list, &c.ListCost}, {contr, &c.ContractedCost}} {
		if m.s != nil {
			d, err := parseStoredAmount(*m.s)
			if err != nil {
				return c, err
			}
			*m.dst = &d
		}
	}
	if tags != nil {
		c.Tags = json.RawMessage(*tags)
	}
	if focus != nil {
		if err := json.Unmarshal([]byte(*focus), &c.Focus); err != nil {
			return c, fmt.Errorf("stored focus of %s: %w", c.ID, err)
		}
		c.completeFocus()
	}
	return c, nil
}

// completeFocus puts the typed columns back into Focus under their FOCUS
// names, so that Focus is the row as the dataset had it.
func (c *Cost) completeFocus() {
	str := func(name string, v *string) {
		if v != nil {
			b, _ := json.Marshal(*v) // strings always marshal
			c.Focus[name] = b
		}
	}
	when := func(name string, v *time.Time) {
		if v != nil {
			c.Focus[name] = json.RawMessage(`"` + v.UTC().Format(time.RFC3339Nano) + `"`)
		}
	}
	num := func(name string, v *decimal.Decimal) {
		if v != nil {
			c.Focus[name] = json.RawMessage(FormatAmount(*v))
		}
	}
	num(colBilledCost, &c.Amount)
	cur, svc := c.Currency, c.Service
	str(colBillingCurrency, &cur)
	if _, null := c.Focus[colServiceName]; !null {
		str(colServiceName, &svc)
	}
	str(colBillingAccountID, c.BillingAccountID)
	when(colBillingPeriodStart, c.BillingPeriodStart)
	when(colBillingPeriodEnd, c.BillingPeriodEnd)
	when(colChargePeriodStart, c.ChargePeriodStart)
	when(colChargePeriodEnd, c.ChargePeriodEnd)
	str(colChargeCategory, c.ChargeCategory)
	str(colServiceCategory, c.ServiceCategory)
	str(colRegionID, c.RegionID)
	num(colEffectiveCost, c.EffectiveCost)
	num(colListCost, c.ListCost)
	num(colContractedCost, c.ContractedCost)
	if c.Tags != nil {
		c.Focus[colTags] = c.Tags
	}
}

// Costs returns a page of t's cost items that f selects, ordered by usage
// date then id, and the cursor of the next page ("" on the last). The order
// is a keyset: walking every page sees each item that existed when the walk
// began exactly once, however many are inserted meanwhile.
func (s *Service) Costs(ctx context.Context, t isolation.Tenant, f CostFilter, p Page) ([]Cost, string, error) {
	sql, args, err := costsSQL(t, f, p)
	if err != nil {
		return nil, "", err
	}
	limit := p.limit()
	var out []Cost
	err = s.read1(ctx, t, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanCost)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list costs: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(last.UsageDate.Format(DateLayout), last.ID.String())
	}
	return out, next, nil
}

// costsSQL builds the statement of Costs for t, f and p, and its
// arguments: it reads one item more than p's limit, to tell whether there
// is a next page.
func costsSQL(t isolation.Tenant, f CostFilter, p Page) (string, []any, error) {
	from, to, err := f.bounds()
	if err != nil {
		return "", nil, err
	}
	// Before the first item of the first day: ids are never nil.
	afterDate, afterID := from, uuid.Nil
	if p.Cursor != "" {
		key, err := decodeCursor(p.Cursor, 2)
		if err != nil {
			return "", nil, err
		}
		var ok bool
		if afterDate, ok = ParseDate(key[0]); !ok {
			return "", nil, ErrBadCursor
		}
		if afterID, err = uuid.Parse(key[1]); err != nil {
			return "", nil, ErrBadCursor
		}
	}
	limit := p.limit()
	// Conditions are appended only when set, rather than written as
	// "x = $n OR $n IS NULL", which a generic plan could not turn into an
	// index condition.
	args := []any{t.ID, from, to, afterDate, afterID, limit + 1}
	var sql strings.Builder
	sql.WriteString(`SELECT ` + costColumns + ` FROM cost_items c`)
	if f.Provider != "" {
		sql.WriteString(` JOIN accounts a ON a.tenant_id = c.tenant_id AND a.id = c.account_id AND a.tenant_id = $1`)
	}
	sql.WriteString(` WHERE c.tenant_id = $1 AND c.usage_date BETWEEN $2 AND $3 AND (c.usage_date, c.id) > ($4, $5)`)
	f.conditions(&sql, &args)
	sql.WriteString(` ORDER BY c.usage_date, c.id LIMIT $6`)
	return sql.String(), args, nil
}

// GroupBy is what a cost summary totals by: one of the groupings below, or
// TagPrefix followed by a tag key.
type GroupBy string

// The groupings of a summary.
const (
	ByService         GroupBy = "service"
	ByServiceCategory GroupBy = "service_category"
	ByProvider        GroupBy = "provider"
	ByAccount         GroupBy = "account"
	ByBillingAccount  GroupBy = "billing_account"
	ByRegion          GroupBy = "region"
	ByChargeCategory  GroupBy = "charge_category"
	ByDay             GroupBy = "day"
	ByMonth           GroupBy = "month"
	// TagPrefix groups by the value of one tag: "tag:team".
	TagPrefix = "tag:"
)

// Groupings lists the fixed groupings, for documentation and errors.
var Groupings = []GroupBy{ByService, ByServiceCategory, ByProvider, ByAccount, ByBillingAccount, ByRegion, ByChargeCategory, ByDay, ByMonth}

// groupKeys maps each fixed grouping to its key expression (on cost_items
// as c, accounts as a). Only these fixed strings reach the SQL text; a
// missing value is the empty key.
var groupKeys = map[GroupBy]string{
	ByService:         `c.service`,
	ByServiceCategory: `COALESCE(c.service_category, '')`,
	ByProvider:        `a.provider`,
	ByAccount:         `c.account_id::text`,
	ByBillingAccount:  `COALESCE(c.billing_account_id, '')`,
	ByRegion:          `COALESCE(c.region_id, '')`,
	ByChargeCategory:  `COALESCE(c.charge_category, '')`,
	ByDay:             `to_char(c.usage_date::timestamp, 'YYYY-MM-DD')`, // whatever DateStyle says
	ByMonth:           `to_char(c.usage_date::timestamp, 'YYYY-MM')`,
}

// ErrBadGroupBy is returned for a grouping that is none of Groupings nor
// "tag:" and a key.
var ErrBadGroupBy = errors.New(`group_by: must be one of service, service_category, provider, account, billing_account, region, charge_category, day, month, or tag:<key>`)

// Metric is the cost a summary adds up.
type Metric string

// The metrics: FOCUS's cost columns, all in the billing currency.
const (
	BilledCost     Metric = "billed_cost"
	EffectiveCost  Metric = "effective_cost"
	ListCost       Metric = "list_cost"
	ContractedCost Metric = "contracted_cost"
)

// metricColumns maps each metric to its column of c.
var metricColumns = map[Metric]string{
	BilledCost:     `c.amount`,
	EffectiveCost:  `c.effective_cost`,
	ListCost:       `c.list_cost`,
	ContractedCost: `c.contracted_cost`,
}

// ErrBadMetric is returned for a metric other than those above.
var ErrBadMetric = errors.New(`metric: must be one of billed_cost, effective_cost, list_cost, contracted_cost`)

// SummaryQuery asks for a summary: the items Filter selects, totalled by
// GroupBy (ByService when empty), adding up Metric (BilledCost when empty).
type SummaryQuery struct {
	Filter  CostFilter
	GroupBy GroupBy
	Metric  Metric
}

// Total is the cost of one key (a service, an account id, a day, a tag
// value, …) in one currency.
type Total struct {
	Key      string
	Amount   decimal.Decimal
	Currency string
}

// Statement returns the statement Summary sends for q and t, and its
// arguments: for measuring the same statement without the server (the
// bench's pgbench anchor).
func (q SummaryQuery) Statement(t isolation.Tenant) (string, []any, error) { return q.summarySQL(t) }

// summarySQL builds q's statement for t and its arguments.
func (q SummaryQuery) summarySQL(t isolation.Tenant) (string, []any, error) {
	g, m := q.GroupBy, q.Metric
	if g == "" {
		g = ByService
	}
	if m == "" {
		m = BilledCost
	}
	metric, ok := metricColumns[m]
	if !ok {
		return "", nil, ErrBadMetric
	}
	from, to, err := q.Filter.bounds()
	if err != nil {
		return "", nil, err
	}
	args := []any{t.ID, from, to}
	key, ok := groupKeys[g]
	if !ok {
		tag, isTag := strings.CutPrefix(string(g), TagPrefix)
		if !isTag || tag == "" || len(tag) > 200 || !utf8.ValidString(tag) || strings.IndexByte(tag, 0) >= 0 {
			return "", nil, ErrBadGroupBy
		}
		args = append(args, tag)
		key = `COALESCE(c.tags ->> $4, '')`
	}
	var sql strings.Builder
	sql.WriteString(`SELECT ` + key + `, c.currency, sum(` + metric + `)::text FROM cost_items c`)
	if g == ByProvider || q.Filter.Provider != "" {
		sql.WriteString(` JOIN accounts a ON a.tenant_id = c.tenant_id AND a.id = c.account_id AND a.tenant_id = $1`)
	}
	sql.WriteString(` WHERE c.tenant_id = $1 AND c.usage_date BETWEEN $2 AND $3`)
	if m != BilledCost {
		sql.WriteString(` AND ` + metric + ` IS NOT NULL`)
	}
	q.Filter.conditions(&sql, &args)
	sql.WriteString(` GROUP BY 1, 2 ORDER BY 1, 2`)
	return sql.String(), args, nil
}

// Summary totals t's cost items that q selects by q's grouping, one total
// per key and currency — different currencies are never added together —
// ordered by key, then currency. The sums are PostgreSQL's, exact; items
// without the metric (an effective cost, say) are left out.
func (s *Service) Summary(ctx context.Context, t isolation.Tenant, q SummaryQuery) ([]Total, error) {
	sql, args, err := q.summarySQL(t)
	if err != nil {
		return nil, err
	}
	var out []Total
	err = s.read1(ctx, t, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Total, error) {
			var (
				tot    Total
				amount string
			)
			if err := r.Scan(&tot.Key, &tot.Currency, &amount); err != nil {
				return tot, err
			}
			var err error
			tot.Amount, err = parseStoredAmount(amount)
			return tot, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("summarize costs: %w", err)
	}
	return out, nil
}
