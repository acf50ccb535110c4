package finops

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/jsonkeys"
)

// MaxClockSkew is how far in the future a restored row's timestamps may
// be: the clock of the server that exported it may run ahead of this one's.
const MaxClockSkew = 5 * time.Minute

// Restore checks the rows of a tenant export as the API checks what it is
// sent — with the API's own parsers and validators, so that a rule the API
// gains holds for imports too — and gives each row back as the API would
// have stored it. A row the API would refuse, or round, is refused with
// the place the caller names (a file's line): an amount that is no exact
// decimal, a usage date the API refuses, a FOCUS column ValidateCostRow
// refuses, an idempotency key created in the future (it would never
// expire), a cost item or budget whose account is not in the export, a key
// given twice, a column the API does not know.
//
// Rows carry what the API generates (ids, creation and update times) as
// well: ids must be UUIDs, unique where the tables' keys want them, and
// times no later than now and MaxClockSkew. A Restore checks one export;
// it is not safe for concurrent use.
type Restore struct {
	now time.Time
	// seen holds, per table, the keys its rows must not share.
	seen map[string]map[string]bool
	// accounts are the account ids seen; refs, those referenced before
	// they were seen, with where.
	accounts map[uuid.UUID]bool
	refs     map[uuid.UUID]string
}

// NewRestore returns a Restore checking timestamps against now.
func NewRestore(now time.Time) *Restore {
	return &Restore{now: now, seen: map[string]map[string]bool{}, accounts: map[uuid.UUID]bool{}, refs: map[uuid.UUID]string{}}
}

// Row checks one row of table, found at where (in the error messages), and
// returns it as the API would store it: the API's normal forms (currency
// in capitals, names trimmed, dates as YYYY-MM-DD), amounts as written
// (exact decimal text, never through a float), every column of the row's
// table this server has, and no tenant_id (the caller puts the importing
// tenant's in). Its error joins a *store.ValidationError per
// problem, each Field starting with where and table.
func (r *Restore) Row(where, table string, row json.RawMessage) (json.RawMessage, error) {
	label := where + ": " + table
	var errs fieldErrors
	var dup *jsonkeys.DuplicateError
	if err := jsonkeys.Unique(row); errors.As(err, &dup) {
		errs.add(label, dup.Error())
		return nil, errs.err()
	} else if err != nil {
		errs.add(label, "not a JSON object")
		return nil, errs.err()
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(row, &obj); err != nil || obj == nil {
		errs.add(label, "not a JSON object")
		return nil, errs.err()
	}
	if _, ok := obj["tenant_id"]; ok {
		errs.add(label+".tenant_id", "rows of an export carry no tenant_id: the importing tenant's is put in")
		delete(obj, "tenant_id")
	}
	check, ok := restorers[table]
	if !ok {
		errs.add(label, "this server imports no table "+table)
		return nil, errs.err()
	}
	out := check(r, label, obj, &errs)
	if err := errs.err(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", label, err)
	}
	return b, nil
}

// Done reports the references to accounts that no row of the export
// holds: the API would have answered "no such account".
func (r *Restore) Done() error {
	var errs fieldErrors
	for _, where := range slices.Sorted(maps.Values(r.refs)) {
		errs.add(where+".account_id", "no such account in the export")
	}
	return errs.err()
}

// restorers check and shape the rows of each table Restore knows.
var restorers = map[string]func(r *Restore, label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any{
	"accounts":         (*Restore).account,
	"cost_items":       (*Restore).cost,
	"budgets":          (*Restore).budget,
	"idempotency_keys": (*Restore).idempotencyKey,
	"cost_imports":     (*Restore).costImport,
}

// stored takes the columns the API generates out of obj — an id and the
// timestamps named — checks them, and returns them for the row.
func (r *Restore) stored(label, table string, obj map[string]json.RawMessage, errs *fieldErrors, id bool, times ...string) map[string]any {
	out := map[string]any{}
	if id {
		raw, ok := obj["id"]
		delete(obj, "id")
		var s string
		u, err := uuid.Parse(strings.TrimSpace(unquote(raw, &s)))
		switch {
		case !ok || string(raw) == "null":
			errs.add(label+".id", "required")
		case err != nil || u == uuid.Nil:
			errs.add(label+".id", "must be a UUID")
		case r.unique(table, "id", u.String()):
			errs.add(label+".id", "another row of "+table+" has this id")
		default:
			out["id"] = u
		}
	}
	var ts []time.Time
	for _, col := range times {
		raw, ok := obj[col]
		delete(obj, col)
		var s string
		t, err := time.Parse(time.RFC3339Nano, unquote(raw, &s))
		switch {
		case !ok || string(raw) == "null":
			errs.add(label+"."+col, "required")
		case err != nil:
			errs.add(label+"."+col, "must be a time written as in RFC 3339")
		case t.After(r.now.Add(MaxClockSkew)):
			errs.add(label+"."+col, "must not be in the future")
		default:
			out[col] = t
			ts = append(ts, t)
		}
	}
	if len(ts) == 2 && ts[1].Before(ts[0]) {
		errs.add(label+"."+times[1], "must not be before "+times[0])
	}
	return out
}

// unique records key of table's column col, and reports whether a row
// held it already.
func (r *Restore) unique(table, col, key string) bool {
	k := table + "." + col
	if r.seen[k] == nil {
		r.seen[k] = map[string]bool{}
	}
	if r.seen[k][key] {
		return true
	}
	r.seen[k][key] = true
	return false
}

// reference notes that the row at label names account id.
func (r *Restore) reference(label string, id uuid.UUID) {
	if id != uuid.Nil && !r.accounts[id] {
		if _, ok := r.refs[id]; !ok {
			r.refs[id] = label
		}
	}
}

// unknown reports the columns left in obj that hold a value: the API knows
// no such field. A column that is null is what a newer server's export
// has for a column this one does not have yet, and says nothing.
func unknown(label string, obj map[string]json.RawMessage, errs *fieldErrors) {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if strings.TrimSpace(string(obj[k])) != "null" {
			errs.add(label+"."+k, "unknown field")
		}
	}
}

// text reads obj's string field name, adding an error when it is anything
// else. It returns nil when the field is absent or null.
func text(label, name string, obj map[string]json.RawMessage, errs *fieldErrors) *string {
	raw, ok := obj[name]
	delete(obj, name)
	if !ok || strings.TrimSpace(string(raw)) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		errs.add(label+"."+name, "must be a string")
		return nil
	}
	return &s
}

// unquote returns the string raw holds, or raw's own text when it holds
// something else (its parser then says what is wrong).
func unquote(raw json.RawMessage, s *string) string {
	if json.Unmarshal(raw, s) == nil {
		return *s
	}
	return string(raw)
}

// amountText is an amount as the row wrote it, once the API's parser has
// accepted it: a JSON number's text, or a string's content. PostgreSQL
// reads either exactly, with the scale written.
func amountText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimPrefix(strings.TrimSpace(s), "+")
	}
	return strings.TrimSpace(string(raw))
}

// prefixed adds err's validation errors to errs, their fields prefixed
// with label; other errors under label itself.
func prefixed(label string, err error, errs *fieldErrors) {
	for _, e := range unjoin(err) {
		var v *store.ValidationError
		if errors.As(e, &v) {
			errs.add(label+"."+v.Field, v.Msg)
		} else {
			errs.add(label, e.Error())
		}
	}
}

// unjoin unpacks errors.Join trees.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// account checks an account row as CreateAccount checks its input.
func (r *Restore) account(label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any {
	out := r.stored(label, "accounts", obj, errs, true, "created_at", "updated_at")
	in := AccountInput{
		Provider:   text(label, "provider", obj, errs),
		ExternalID: text(label, "external_id", obj, errs),
		Name:       text(label, "name", obj, errs),
	}
	unknown(label, obj, errs)
	check := in
	if in.Provider != nil && focusProvider(*in.Provider) {
		// An account a FOCUS dataset created (ImportCosts): its provider
		// is any billing export's, in NormalizeProvider's form.
		check.Provider = &Providers[0]
	}
	prefixed(label, check.validate(true), errs)
	if id, ok := out["id"].(uuid.UUID); ok {
		r.accounts[id] = true
		delete(r.refs, id)
	}
	if in.Provider != nil && in.ExternalID != nil &&
		r.unique("accounts", "provider, external_id", *in.Provider+"\x00"+*in.ExternalID) {
		errs.add(label+".external_id", "another account of the export has this provider and external_id")
	}
	out["provider"], out["external_id"], out["name"] = in.Provider, in.ExternalID, in.Name
	return out
}

// focusTexts, focusTimes, focusDecimals and focusJSON are the columns of
// cost_items beside CostColumns (tenant schema version 3, archive format
// version 2): the FOCUS columns a billing export brings.
var (
	focusTexts    = []string{"billing_account_id", "charge_category", "service_category", "region_id"}
	focusTimes    = []string{"billing_period_start", "billing_period_end", "charge_period_start", "charge_period_end"}
	focusDecimals = []string{"effective_cost", "list_cost", "contracted_cost"}
	focusJSON     = []string{"tags", "focus"}
)

// focusProvider reports whether p is a provider ImportCosts gives the
// accounts it creates: NormalizeProvider's form, 1 to 100 characters.
func focusProvider(p string) bool {
	n := utf8.RuneCountInString(p)
	return n >= 1 && n <= 100 && NormalizeProvider(p) == p
}

// cost checks a cost row as every way in checks one: its five API columns
// with the JSON ingest's own item parser, then the whole row — FOCUS
// columns too — with ValidateCostRow. Amounts stay the text they were
// written as (normalised as NormalizeDecimal does, never through a float),
// and every column goes on to the stored row.
func (r *Restore) cost(label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any {
	out := r.stored(label, "cost_items", obj, errs, true, "created_at")
	// The FOCUS columns, taken out before the five are parsed.
	var row CostRow
	texts := []*string{&row.BillingAccountID, &row.ChargeCategory, &row.ServiceCategory, &row.RegionID}
	for i, col := range focusTexts {
		if s := text(label, col, obj, errs); s != nil {
			*texts[i] = *s
		}
	}
	times := []*time.Time{&row.BillingPeriodStart, &row.BillingPeriodEnd, &row.ChargePeriodStart, &row.ChargePeriodEnd}
	for i, col := range focusTimes {
		*times[i] = timeOf(label, col, obj, errs)
	}
	decimals := []*string{&row.EffectiveCost, &row.ListCost, &row.ContractedCost}
	for i, col := range focusDecimals {
		raw, ok := obj[col]
		delete(obj, col)
		if ok && strings.TrimSpace(string(raw)) != "null" {
			*decimals[i] = decimalText(raw)
		}
	}
	jsons := []*string{&row.Tags, &row.Focus}
	for i, col := range focusJSON {
		raw, ok := obj[col]
		delete(obj, col)
		if ok && strings.TrimSpace(string(raw)) != "null" {
			*jsons[i] = string(raw)
		}
	}
	amount := obj["amount"]
	for k, v := range obj {
		if !slices.Contains(CostColumns, k) && strings.TrimSpace(string(v)) == "null" {
			delete(obj, k) // a newer server's column, empty: see unknown
		}
	}
	before := errs.count()
	c := parseCostObject(label, obj, errs)
	parsed := errs.count() == before
	if parsed {
		row.AccountID, row.Service, row.UsageDate, row.Currency = c.AccountID, c.Service, c.UsageDate, c.Currency
		row.Amount = decimalText(amount)
		row.validate(label, errs)
	} else {
		// The five columns are reported already; the FOCUS ones still
		// are, with a row whose five are sound.
		probe := row
		probe.AccountID, probe.Service, probe.UsageDate, probe.Amount, probe.Currency = uuid.UUID{1}, "s", MinUsageDate, "0", "USD"
		probe.validate(label, errs)
	}
	r.reference(label, c.AccountID)
	out["account_id"], out["service"], out["currency"] = c.AccountID, c.Service, c.Currency
	out["usage_date"] = c.UsageDate.Format(DateLayout)
	out["amount"] = row.Amount
	for i, col := range focusTexts {
		out[col] = nullIfEmpty(*texts[i])
	}
	for i, col := range focusTimes {
		if !times[i].IsZero() {
			out[col] = *times[i]
		} else {
			out[col] = nil
		}
	}
	for i, col := range focusDecimals {
		out[col] = nullIfEmpty(*decimals[i])
	}
	for i, col := range focusJSON {
		if *jsons[i] != "" {
			out[col] = json.RawMessage(*jsons[i])
		} else {
			out[col] = nil
		}
	}
	return out
}

// timeOf reads obj's timestamp column col, written as in RFC 3339 (as
// PostgreSQL's to_jsonb writes a timestamptz); zero when absent or null.
func timeOf(label, col string, obj map[string]json.RawMessage, errs *fieldErrors) time.Time {
	s := text(label, col, obj, errs)
	if s == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		errs.add(label+"."+col, "must be a time written as in RFC 3339")
		return time.Time{}
	}
	return t
}

// decimalText is an amount as the row wrote it — a JSON number's text or a
// string's content — in NormalizeDecimal's form when it is a decimal, as
// written otherwise (ValidateCostRow then refuses it).
func decimalText(raw json.RawMessage) string {
	s := amountText(raw)
	if canon, ok := NormalizeDecimal(s); ok {
		return canon
	}
	if s == "" {
		return `""` // not "missing": a value that is no decimal
	}
	return s
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// budget checks a budget row as CreateBudget checks its input.
func (r *Restore) budget(label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any {
	out := r.stored(label, "budgets", obj, errs, true, "created_at", "updated_at")
	in := BudgetInput{Amount: obj["amount"], AccountID: text(label, "account_id", obj, errs), Service: text(label, "service", obj, errs),
		Provider: text(label, "provider", obj, errs), TagKey: text(label, "tag_key", obj, errs), TagValue: text(label, "tag_value", obj, errs)}
	delete(obj, "amount")
	for _, f := range []struct {
		name string
		dst  *string
	}{{"name", &in.Name}, {"currency", &in.Currency}, {"period", &in.Period}} {
		if s := text(label, f.name, obj, errs); s != nil {
			*f.dst = *s
		}
	}
	unknown(label, obj, errs)
	b, err := in.parse()
	prefixed(label, err, errs)
	if err == nil && r.unique("budgets", "name", b.Name) {
		errs.add(label+".name", "another budget of the export has this name")
	}
	if b.AccountID != nil {
		r.reference(label, *b.AccountID)
	}
	out["name"], out["currency"], out["period"], out["account_id"], out["service"] = b.Name, b.Currency, b.Period, b.AccountID, b.Service
	out["provider"], out["tag_key"], out["tag_value"] = b.Provider, b.TagKey, b.TagValue
	out["amount"] = amountText(in.Amount)
	return out
}

// idempotencyKey checks a row of the keys that make an ingest idempotent:
// a key the API would take, for an operation it performs, with the
// fingerprint and result it records, created no later than now — a key
// created in 2999 would never expire.
func (r *Restore) idempotencyKey(label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any {
	out := r.stored(label, "idempotency_keys", obj, errs, false, "created_at")
	key := text(label, "key", obj, errs)
	op := text(label, "operation", obj, errs)
	fp := text(label, "fingerprint", obj, errs)
	result, hasResult := obj["result"]
	delete(obj, "result")
	unknown(label, obj, errs)
	switch {
	case key == nil:
		errs.add(label+".key", "required")
	case (&IdempotencyKey{Key: *key}).validate() != nil:
		errs.add(label+".key", strings.TrimPrefix(ErrBadIdempotencyKey.Error(), "Idempotency-Key: "))
	case r.unique("idempotency_keys", "key", *key):
		errs.add(label+".key", "another row of the export has this key")
	}
	if op == nil || *op != opIngestCosts {
		errs.add(label+".operation", fmt.Sprintf("must be %q", opIngestCosts))
	}
	if b, err := hex.DecodeString(strings.TrimPrefix(deref(fp), `\x`)); fp == nil || !strings.HasPrefix(*fp, `\x`) || err != nil || len(b) != 32 {
		errs.add(label+".fingerprint", `must be a SHA-256, written \x and 64 hex digits`)
	}
	var res Ingested
	dec := json.NewDecoder(bytes.NewReader(result))
	dec.DisallowUnknownFields()
	if !hasResult || dec.Decode(&res) != nil || res.Inserted < 0 || res.Inserted > MaxCostsPerIngest {
		errs.add(label+".result", fmt.Sprintf(`must be what an ingest answered: {"inserted": 0 to %d}`, MaxCostsPerIngest))
	}
	out["key"], out["operation"], out["fingerprint"], out["result"] = key, op, fp, result
	return out
}

// costImport checks the record of a FOCUS import (ImportCosts) as
// ImportCosts writes one: a status, a format and a replace mode it knows,
// counts that are not negative, an error it would have kept, and times in
// order. An import still running when the export was made is restored as
// failed: nothing runs it here, and its rows, not committed, are not in
// the export.
func (r *Restore) costImport(label string, obj map[string]json.RawMessage, errs *fieldErrors) map[string]any {
	out := r.stored(label, "cost_imports", obj, errs, true, "started_at", "updated_at")
	status := text(label, "status", obj, errs)
	format := text(label, "format", obj, errs)
	replace := text(label, "replace", obj, errs)
	msg := text(label, "error", obj, errs)
	finished := timeOf(label, "finished_at", obj, errs)
	counts := map[string]*int64{}
	for _, col := range []string{"rows_done", "bytes_done", "inserted", "replaced", "accounts_created"} {
		raw, ok := obj[col]
		delete(obj, col)
		var n int64
		switch {
		case !ok || strings.TrimSpace(string(raw)) == "null":
			if col == "rows_done" || col == "bytes_done" {
				errs.add(label+"."+col, "required")
			}
		case json.Unmarshal(raw, &n) != nil || n < 0:
			errs.add(label+"."+col, "must be a whole number, 0 or more")
		default:
			counts[col] = &n
		}
	}
	unknown(label, obj, errs)
	switch deref(status) {
	case ImportRunning:
		if !finished.IsZero() {
			errs.add(label+".finished_at", "must be null while the import runs")
		}
	case ImportSucceeded, ImportFailed:
		if finished.IsZero() {
			errs.add(label+".finished_at", "required for a finished import")
		}
	default:
		errs.add(label+".status", fmt.Sprintf("must be one of %q, %q, %q", ImportRunning, ImportSucceeded, ImportFailed))
	}
	if f := deref(format); f != "csv" && f != "parquet" {
		errs.add(label+".format", `must be one of "csv", "parquet"`)
	}
	if replace != nil && *replace != ReplaceBillingPeriod {
		errs.add(label+".replace", fmt.Sprintf("must be null or %q", ReplaceBillingPeriod))
	}
	if msg != nil {
		if m := checkFOCUSText(*msg); m != "" || utf8.RuneCountInString(*msg) > 4000 {
			errs.add(label+".error", "must be text of at most 4000 characters")
		}
	}
	if start, ok := out["started_at"].(time.Time); ok && !finished.IsZero() {
		switch {
		case finished.Before(start):
			errs.add(label+".finished_at", "must not be before started_at")
		case finished.After(r.now.Add(MaxClockSkew)):
			errs.add(label+".finished_at", "must not be in the future")
		}
	}
	if deref(status) == ImportRunning {
		s, m := ImportFailed, "interrupted: the import was still running when the tenant was exported; its rows are not in the export"
		status, msg = &s, &m
		if u, ok := out["updated_at"].(time.Time); ok {
			finished = u
		}
	}
	out["status"], out["format"], out["replace"], out["error"] = status, format, replace, msg
	out["finished_at"] = nil
	if !finished.IsZero() {
		out["finished_at"] = finished
	}
	for col, n := range counts {
		out[col] = n
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
