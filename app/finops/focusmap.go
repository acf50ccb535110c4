package finops

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bulkheadhq/bulkhead/app/store"
)

// The typed FOCUS columns: those cost_items has a column for. Every other
// column of a dataset goes into CostRow.Focus under its own name.
const (
	colBilledCost         = "BilledCost"
	colBillingCurrency    = "BillingCurrency"
	colServiceName        = "ServiceName"
	colServiceCategory    = "ServiceCategory"
	colBillingAccountID   = "BillingAccountId"
	colBillingAccountName = "BillingAccountName"
	colBillingPeriodStart = "BillingPeriodStart"
	colBillingPeriodEnd   = "BillingPeriodEnd"
	colChargePeriodStart  = "ChargePeriodStart"
	colChargePeriodEnd    = "ChargePeriodEnd"
	colChargeCategory     = "ChargeCategory"
	colRegionID           = "RegionId"
	colEffectiveCost      = "EffectiveCost"
	colListCost           = "ListCost"
	colContractedCost     = "ContractedCost"
	colTags               = "Tags"
	colSubAccountID       = "SubAccountId"
	colSubAccountName     = "SubAccountName"
	colProviderName       = "ProviderName"
	colServiceProvider    = "ServiceProviderName"
	colInvoiceIssuer      = "InvoiceIssuerName"
	colPublisherName      = "PublisherName"
)

// typedColumns are stored in their own cost_items column, not in Focus.
var typedColumns = map[string]bool{
	colBilledCost: true, colBillingCurrency: true, colServiceName: true, colServiceCategory: true,
	colBillingAccountID: true, colBillingPeriodStart: true, colBillingPeriodEnd: true,
	colChargePeriodStart: true, colChargePeriodEnd: true, colChargeCategory: true, colRegionID: true,
	colEffectiveCost: true, colListCost: true, colContractedCost: true, colTags: true,
}

// accountKey identifies the account a FOCUS row belongs to: its provider
// (NormalizeProvider of ProviderName) and its external id (SubAccountId,
// or BillingAccountId when there is no sub account).
type accountKey struct {
	provider, externalID string
}

// focusLayout maps the columns of one dataset.
type focusLayout struct {
	cols []layoutCol
	// at[i] is the dataset column of focusColumns[i], or -1.
	at []int
	// pos is at by FOCUS column id, for the row's lookups.
	pos map[string]int
	// replace requires what a restatement is keyed by.
	replace bool
}

type layoutCol struct {
	name  string // the key in Focus: the FOCUS id, or the custom column's own name
	focus int    // index in focusColumns, or -1 for a custom or unknown column
	kind  focusKind
	typed bool
	skip  bool
}

// newFOCUSLayout maps header (a dataset's column names). Two columns naming
// the same FOCUS column are a *store.ValidationError for "header".
func newFOCUSLayout(header []string, replace bool) (*focusLayout, error) {
	l := &focusLayout{cols: make([]layoutCol, len(header)), at: make([]int, len(focusColumns)), replace: replace}
	for i := range l.at {
		l.at[i] = -1
	}
	var errs fieldErrors
	// Current ids first, so that an old id (ChargeType) only stands in for
	// a column the dataset does not have under its current id.
	aliased := map[int]int{}
	for j, raw := range header {
		name := cleanHeader(raw)
		l.cols[j] = layoutCol{name: name, focus: -1}
		if name == "" {
			l.cols[j].name = fmt.Sprintf("column %d", j+1)
			continue
		}
		i, alias, ok := focusColumnIndex(name)
		switch {
		case !ok:
		case alias:
			aliased[j] = i
		case l.at[i] >= 0:
			errs.add("header", fmt.Sprintf("column %q appears twice", focusColumns[i].Name))
		default:
			l.at[i] = j
			l.cols[j] = layoutCol{name: focusColumns[i].Name, focus: i, kind: focusColumns[i].Kind}
		}
	}
	for j, i := range aliased {
		if l.at[i] < 0 {
			l.at[i] = j
			l.cols[j] = layoutCol{name: focusColumns[i].Name, focus: i, kind: focusColumns[i].Kind}
		}
	}
	seen := map[string]bool{}
	for j := range l.cols {
		c := &l.cols[j]
		c.typed = c.focus >= 0 && typedColumns[c.name]
		if c.focus < 0 {
			if msg := checkFOCUSText(c.name); msg != "" || utf8.RuneCountInString(c.name) > 200 {
				errs.add("header", fmt.Sprintf("column %d: its name must be valid UTF-8 of at most 200 characters", j+1))
			}
			if seen[c.name] {
				errs.add("header", fmt.Sprintf("column %q appears twice", c.name))
			}
		}
		seen[c.name] = true
	}
	for _, req := range focusRequired {
		if i, _, _ := focusColumnIndex(req); l.at[i] < 0 {
			errs.add("header", fmt.Sprintf("missing column %q", req))
		}
	}
	l.pos = make(map[string]int, len(focusColumns))
	for i, c := range focusColumns {
		l.pos[c.Name] = l.at[i]
	}
	return l, errs.err()
}

// has reports whether the dataset has the FOCUS column name.
func (l *focusLayout) has(name string) bool {
	j, ok := l.pos[name]
	return ok && j >= 0
}

// cellOf returns the cell of the FOCUS column name in cells, null when the
// dataset does not have it.
func (l *focusLayout) cellOf(cells []cell, name string) cell {
	if j, ok := l.pos[name]; ok && j >= 0 {
		return cells[j]
	}
	return cell{null: true}
}

// focusRow is one parsed row: what cost_items stores, and the account it
// belongs to (AccountID is filled in once the account is known).
type focusRow struct {
	CostRow
	account     accountKey
	accountName string
}

// row turns cells into a focusRow, adding every problem to errs as
// "row 5.BilledCost". It reports whether the row is good; scratch is
// reused for building Focus.
func (l *focusLayout) row(cells []cell, name string, errs *fieldErrors, scratch *[]byte) (focusRow, bool) {
	before := errs.count()
	bad := func(col, msg string) { errs.add(name+"."+col, msg) }
	var r focusRow
	// Typed columns.
	text := func(col string, required bool) string {
		c := l.cellOf(cells, col)
		if c.null {
			if required {
				bad(col, "required")
			}
			return ""
		}
		v := strings.TrimSpace(c.s)
		if msg := checkFOCUSText(v); msg != "" {
			bad(col, msg)
			return ""
		}
		return v
	}
	dec := func(col string, required bool) string {
		c := l.cellOf(cells, col)
		if c.null {
			if required {
				bad(col, "required")
			}
			return ""
		}
		v, ok := NormalizeDecimal(c.s)
		if !ok {
			bad(col, "must be a decimal number such as -12.34 (FOCUS NumericFormat)")
		}
		return v
	}
	when := func(col string, required bool) time.Time {
		c := l.cellOf(cells, col)
		if c.null {
			if required {
				bad(col, "required")
			}
			return time.Time{}
		}
		t, ok := ParseFOCUSDateTime(c.s)
		if !ok {
			bad(col, "must be an ISO 8601 date/time such as 2024-09-01T00:00:00Z")
		}
		return t
	}
	r.Amount = dec(colBilledCost, true)
	r.EffectiveCost = dec(colEffectiveCost, false)
	r.ListCost = dec(colListCost, false)
	r.ContractedCost = dec(colContractedCost, false)
	if c := l.cellOf(cells, colBillingCurrency); c.null {
		bad(colBillingCurrency, "required")
	} else {
		var msg string
		if r.Currency, msg = parseCurrency(c.s); msg != "" {
			bad(colBillingCurrency, msg)
		}
	}
	r.ChargePeriodStart = when(colChargePeriodStart, true)
	r.ChargePeriodEnd = when(colChargePeriodEnd, false)
	r.BillingPeriodStart = when(colBillingPeriodStart, l.replace)
	r.BillingPeriodEnd = when(colBillingPeriodEnd, false)
	if !r.ChargePeriodStart.IsZero() {
		r.UsageDate = r.ChargePeriodStart.Truncate(24 * time.Hour)
	}
	if !r.ChargePeriodEnd.IsZero() && r.ChargePeriodEnd.Before(r.ChargePeriodStart) {
		bad(colChargePeriodEnd, "must not be before ChargePeriodStart")
	}
	if !r.BillingPeriodEnd.IsZero() && r.BillingPeriodEnd.Before(r.BillingPeriodStart) {
		bad(colBillingPeriodEnd, "must not be before BillingPeriodStart")
	}
	r.BillingAccountID = text(colBillingAccountID, l.replace)
	r.ChargeCategory = text(colChargeCategory, false)
	r.ServiceCategory = text(colServiceCategory, false)
	r.RegionID = text(colRegionID, false)
	service := text(colServiceName, false)
	r.Service = service
	if r.Service == "" {
		// FOCUS requires a ServiceName; exports still leave some rows
		// (taxes, marketplace fees) without one. They group under their
		// category; Focus records that ServiceName was null.
		r.Service = firstOf(r.ServiceCategory, r.ChargeCategory, "Unknown")
	}
	if msg := store.CheckText(r.Service); msg != "" {
		bad(colServiceName, msg)
	}
	if c := l.cellOf(cells, colTags); !c.null {
		tags := tagsObject(c.s)
		if msg := checkJSONObject(tags); msg != "" {
			bad(colTags, msg)
		} else {
			r.Tags = tags
		}
	}
	// The account: the sub account, else the billing account, of the
	// provider.
	r.account.externalID, r.accountName = text(colSubAccountID, false), text(colSubAccountName, false)
	if r.account.externalID == "" {
		r.account.externalID = r.BillingAccountID
		r.accountName = text(colBillingAccountName, false)
		if r.account.externalID == "" {
			bad(colSubAccountID, "required: SubAccountId or BillingAccountId names the account the row belongs to")
		}
	}
	if utf8.RuneCountInString(r.account.externalID) > 200 {
		bad(colSubAccountID, "must be at most 200 characters: it is the account's external id")
	}
	// ProviderName; from FOCUS 1.3 ServiceProviderName; datasets without
	// either still name who bills them.
	provider := firstOf(text(colProviderName, false), text(colServiceProvider, false),
		text(colInvoiceIssuer, false), text(colPublisherName, false))
	if provider == "" {
		bad(colProviderName, "required: ProviderName (or, from FOCUS 1.3, ServiceProviderName) names the account's provider")
	}
	r.account.provider = NormalizeProvider(provider)
	if utf8.RuneCountInString(r.account.provider) > 100 {
		bad(colProviderName, "must be at most 100 characters")
	}
	r.accountName = clip(firstOf(r.accountName, r.account.externalID), 200)
	// Every other column, by its own name.
	b := (*scratch)[:0]
	b = append(b, '{')
	n := 0
	for j, c := range cells {
		lc := &l.cols[j]
		if lc.typed || lc.skip || c.null {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, lc.name)
		b = append(b, ':')
		switch {
		case lc.focus < 0 && c.raw:
			b = append(b, c.s...)
		case lc.focus < 0:
			if msg := checkFOCUSText(c.s); msg != "" {
				bad(lc.name, msg)
				continue
			}
			b = appendJSONString(b, c.s)
		case lc.kind == kindDecimal:
			v, ok := NormalizeDecimal(c.s)
			if !ok {
				bad(lc.name, "must be a decimal number such as -12.34 (FOCUS NumericFormat)")
				continue
			}
			b = append(b, v...)
		case lc.kind == kindDateTime:
			t, ok := ParseFOCUSDateTime(c.s)
			if !ok {
				bad(lc.name, "must be an ISO 8601 date/time such as 2024-09-01T00:00:00Z")
				continue
			}
			b = appendJSONString(b, t.Format(time.RFC3339Nano))
		case lc.kind == kindJSON:
			// Informational (SkuPriceDetails): an export that does not
			// write it as a JSON object still loads; the text is kept.
			if msg := checkJSONObject(c.s); msg != "" {
				v := strings.TrimSpace(c.s)
				if msg := checkFOCUSText(v); msg != "" {
					bad(lc.name, msg)
					continue
				}
				b = appendJSONString(b, v)
				continue
			}
			b = append(b, strings.TrimSpace(c.s)...)
		default:
			v := strings.TrimSpace(c.s)
			if msg := checkFOCUSText(v); msg != "" {
				bad(lc.name, msg)
				continue
			}
			b = appendJSONString(b, v)
		}
	}
	if service == "" && l.has(colServiceName) {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, `"ServiceName":null`...)
	}
	b = append(b, '}')
	*scratch = b
	r.Focus = string(b)
	return r, errs.count() == before
}

// tagsObject returns s, a Tags cell, as a JSON object: as it is, or, for
// an export that writes tags as a list of key/value pairs
// ([{"key":"team","value":"web"}], as BigQuery renders a repeated record),
// as the object of those pairs. Anything else is returned as it is, for
// the check to refuse.
func tagsObject(s string) string {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") {
		return s
	}
	var pairs []struct {
		Key   *string         `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal([]byte(s), &pairs); err != nil {
		return s
	}
	obj := make(map[string]json.RawMessage, len(pairs))
	for _, p := range pairs {
		if p.Key == nil {
			return s
		}
		v := p.Value
		if len(v) == 0 {
			v = json.RawMessage("null")
		}
		obj[*p.Key] = v
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return s
	}
	return string(b)
}

func firstOf(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// clip cuts s to at most n characters, at a character boundary.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

// FOCUSColumnNames lists the FOCUS columns Bulkhead knows, for docs and
// tests.
func FOCUSColumnNames() []string {
	out := make([]string, len(focusColumns))
	for i, c := range focusColumns {
		out[i] = c.Name
	}
	slices.Sort(out)
	return out
}
