package finops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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

// Cost is a cost line item.
type Cost struct {
	ID        uuid.UUID
	AccountID uuid.UUID
	Service   string
	// UsageDate is a day, at UTC midnight.
	UsageDate time.Time
	Amount    decimal.Decimal
	Currency  string
	CreatedAt time.Time
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
// code.
func (c CostInput) validate(row string, errs *fieldErrors) {
	if c.AccountID == uuid.Nil {
		errs.add(row+".account_id", "required")
	}
	if msg := checkText(c.Service); msg != "" {
		errs.add(row+".service", msg)
	}
	if c.UsageDate.IsZero() {
		errs.add(row+".usage_date", "required")
	} else if c.UsageDate.Before(MinUsageDate) {
		errs.add(row+".usage_date", "must be "+MinUsageDate.Format(DateLayout)+" or later")
	}
	if !c.Amount.Equal(c.Amount.Truncate(AmountScale)) || c.Amount.Abs().Cmp(maxAmount) >= 0 {
		errs.add(row+".amount", "must have at most 6 decimal places and be below 100000000000000 in magnitude")
	}
	if _, ok := currencies[c.Currency]; !ok {
		errs.add(row+".currency", "must be an active ISO 4217 currency code such as USD or EUR")
	}
}

// checkText checks a name-like text: store.CheckText.
func checkText(s string) string { return store.CheckText(s) }

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

// ingestBatch is how many items one INSERT carries.
const ingestBatch = 10_000

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
		for start := 0; start < len(items); start += ingestBatch {
			if err := insertCosts(ctx, tx, t, items[start:min(start+ingestBatch, len(items))]); err != nil {
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

// insertCosts inserts items in one statement: the columns travel as arrays
// and unnest turns them back into rows on the server. (COPY FROM is refused
// on tables under Row-Level Security.)
func insertCosts(ctx context.Context, tx pgx.Tx, t isolation.Tenant, items []CostInput) error {
	n := len(items)
	var (
		ids       = make([]uuid.UUID, n)
		accounts  = make([]uuid.UUID, n)
		services  = make([]string, n)
		dates     = make([]time.Time, n)
		amounts   = make([]string, n)
		curs      = make([]string, n)
		err       error
		createdAt = time.Now()
	)
	for i, c := range items {
		if ids[i], err = uuid.NewV7(); err != nil {
			return err
		}
		accounts[i], services[i], dates[i], curs[i] = c.AccountID, c.Service, c.UsageDate, c.Currency
		amounts[i] = c.Amount.String()
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, currency, created_at)
		SELECT $1, r.id, r.account_id, r.service, r.usage_date, r.amount::numeric, r.currency, $8
		FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::date[], $6::text[], $7::text[])
			AS r (id, account_id, service, usage_date, amount, currency)`,
		t.ID, ids, accounts, services, dates, amounts, curs, createdAt)
	return err
}

// CostFilter selects cost items: of one account when AccountID is set,
// between From and To (inclusive days) when they are set.
type CostFilter struct {
	AccountID uuid.UUID
	From, To  time.Time
}

// ErrBadRange is returned when a filter's From is after its To.
var ErrBadRange = errors.New("from: must not be after to")

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

const costColumns = `id, account_id, service, usage_date, amount::text, currency, created_at`

func scanCost(row pgx.CollectableRow) (Cost, error) {
	var (
		c      Cost
		amount string
	)
	if err := row.Scan(&c.ID, &c.AccountID, &c.Service, &c.UsageDate, &amount, &c.Currency, &c.CreatedAt); err != nil {
		return c, err
	}
	var err error
	c.Amount, err = parseStoredAmount(amount)
	return c, err
}

// Costs returns a page of t's cost items that f selects, ordered by usage
// date then id, and the cursor of the next page ("" on the last). The order
// is a keyset: walking every page sees each item that existed when the walk
// began exactly once, however many are inserted meanwhile.
func (s *Service) Costs(ctx context.Context, t isolation.Tenant, f CostFilter, p Page) ([]Cost, string, error) {
	from, to, err := f.bounds()
	if err != nil {
		return nil, "", err
	}
	// Before the first item of the first day: ids are never nil.
	afterDate, afterID := from, uuid.Nil
	if p.Cursor != "" {
		key, err := decodeCursor(p.Cursor, 2)
		if err != nil {
			return nil, "", err
		}
		var ok bool
		if afterDate, ok = ParseDate(key[0]); !ok {
			return nil, "", ErrBadCursor
		}
		if afterID, err = uuid.Parse(key[1]); err != nil {
			return nil, "", ErrBadCursor
		}
	}
	limit := p.limit()
	// Two statements rather than "account_id = $x OR $x IS NULL", which a
	// generic plan could not turn into an index condition.
	sql := `SELECT ` + costColumns + ` FROM cost_items
		WHERE tenant_id = $1 AND usage_date BETWEEN $2 AND $3 AND (usage_date, id) > ($4, $5)
		ORDER BY usage_date, id LIMIT $6`
	args := []any{t.ID, from, to, afterDate, afterID, limit + 1}
	if f.AccountID != uuid.Nil {
		sql = `SELECT ` + costColumns + ` FROM cost_items
			WHERE tenant_id = $1 AND account_id = $7 AND usage_date BETWEEN $2 AND $3 AND (usage_date, id) > ($4, $5)
			ORDER BY usage_date, id LIMIT $6`
		args = append(args, f.AccountID)
	}
	var out []Cost
	err = s.run(ctx, t, func(tx pgx.Tx) error {
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

// GroupBy is what a cost summary totals by.
type GroupBy string

// The groupings of a summary.
const (
	ByService GroupBy = "service"
	ByAccount GroupBy = "account"
	ByDay     GroupBy = "day"
)

// groupKeys maps each grouping to its key expression. Only these fixed
// strings reach the SQL text.
var groupKeys = map[GroupBy]string{
	ByService: `service`,
	ByAccount: `account_id::text`,
	ByDay:     `to_char(usage_date::timestamp, 'YYYY-MM-DD')`, // whatever DateStyle says
}

// ErrBadGroupBy is returned for a grouping that is not ByService, ByAccount
// or ByDay.
var ErrBadGroupBy = errors.New(`group_by: must be "service", "account" or "day"`)

// Total is the cost of one key (a service, an account id or a day) in one
// currency.
type Total struct {
	Key      string
	Amount   decimal.Decimal
	Currency string
}

// Summary totals t's cost items between f.From and f.To (inclusive; open
// when zero) by g, one total per key and currency — different currencies
// are never added together — ordered by key, then currency. f.AccountID is
// honoured too. The sums are PostgreSQL's, exact.
func (s *Service) Summary(ctx context.Context, t isolation.Tenant, f CostFilter, g GroupBy) ([]Total, error) {
	key, ok := groupKeys[g]
	if !ok {
		return nil, ErrBadGroupBy
	}
	from, to, err := f.bounds()
	if err != nil {
		return nil, err
	}
	sql := `SELECT ` + key + `, currency, sum(amount)::text FROM cost_items
		WHERE tenant_id = $1 AND usage_date BETWEEN $2 AND $3
		GROUP BY 1, 2 ORDER BY 1, 2`
	args := []any{t.ID, from, to}
	if f.AccountID != uuid.Nil {
		sql = `SELECT ` + key + `, currency, sum(amount)::text FROM cost_items
			WHERE tenant_id = $1 AND account_id = $4 AND usage_date BETWEEN $2 AND $3
			GROUP BY 1, 2 ORDER BY 1, 2`
		args = append(args, f.AccountID)
	}
	var out []Total
	err = s.run(ctx, t, func(tx pgx.Tx) error {
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
