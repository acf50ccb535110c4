package finops

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/store"
)

// CostRow is one cost line item in the shape cost_items stores it: the
// five columns every item has, and the FOCUS columns an export brings
// (empty strings, zero times and nil JSON are NULL). Amounts are exact
// decimal text in the form NormalizeDecimal returns.
type CostRow struct {
	AccountID uuid.UUID
	Service   string
	// UsageDate is a day, at UTC midnight: ChargePeriodStart's day for a
	// FOCUS row.
	UsageDate time.Time
	// Amount is the billed cost (FOCUS BilledCost).
	Amount   string
	Currency string

	BillingAccountID                     string
	BillingPeriodStart, BillingPeriodEnd time.Time
	ChargePeriodStart, ChargePeriodEnd   time.Time
	ChargeCategory                       string
	ServiceCategory                      string
	RegionID                             string
	EffectiveCost, ListCost              string
	ContractedCost                       string
	// Tags is a JSON object (FOCUS KeyValueFormat), or nil.
	Tags string
	// Focus is a JSON object holding every other column of the row's
	// dataset, FOCUS or custom, under its own name; nil for rows that
	// came without a dataset.
	Focus string
}

// ValidateCostRow checks r as cost_items would store it — the one check
// every way in runs (the API's JSON and CSV, FOCUS datasets, tenant
// imports). Every problem is a *store.ValidationError naming the column,
// prefixed by row ("row 5.amount"; row may be empty), joined. It checks
// values only: that the account is the tenant's is the store's to check.
func ValidateCostRow(row string, r CostRow) error {
	var errs fieldErrors
	r.validate(row, &errs)
	return errs.err()
}

func (r *CostRow) validate(row string, errs *fieldErrors) {
	if row != "" {
		row += "."
	}
	if r.AccountID == uuid.Nil {
		errs.add(row+"account_id", "required")
	}
	if msg := store.CheckText(r.Service); msg != "" {
		errs.add(row+"service", msg)
	}
	if r.UsageDate.IsZero() || !r.UsageDate.Equal(r.UsageDate.UTC().Truncate(24*time.Hour)) {
		errs.add(row+"usage_date", "required: a day at UTC midnight")
	} else if r.UsageDate.Before(MinUsageDate) {
		errs.add(row+"usage_date", "must be "+MinUsageDate.Format(DateLayout)+" or later")
	}
	decimal := func(col, v string, required bool) {
		switch canon, ok := NormalizeDecimal(v); {
		case v == "" && required:
			errs.add(row+col, "required")
		case v == "":
		case !ok || canon != v:
			errs.add(row+col, "must be an exact decimal such as 12.34")
		}
	}
	decimal("amount", r.Amount, true)
	decimal("effective_cost", r.EffectiveCost, false)
	decimal("list_cost", r.ListCost, false)
	decimal("contracted_cost", r.ContractedCost, false)
	if _, ok := currencies[r.Currency]; !ok {
		errs.add(row+"currency", "must be an active ISO 4217 currency code such as USD or EUR")
	}
	for _, t := range []struct{ col, v string }{
		{"billing_account_id", r.BillingAccountID}, {"charge_category", r.ChargeCategory},
		{"service_category", r.ServiceCategory}, {"region_id", r.RegionID},
	} {
		if msg := checkFOCUSText(t.v); msg != "" {
			errs.add(row+t.col, msg)
		}
	}
	for _, j := range []struct{ col, v string }{{"tags", r.Tags}, {"focus", r.Focus}} {
		if j.v == "" {
			continue
		}
		if msg := checkJSONObject(j.v); msg != "" {
			errs.add(row+j.col, msg)
		}
	}
	if !r.ChargePeriodEnd.IsZero() && r.ChargePeriodEnd.Before(r.ChargePeriodStart) {
		errs.add(row+"charge_period_end", "must not be before charge_period_start")
	}
	if !r.BillingPeriodEnd.IsZero() && r.BillingPeriodEnd.Before(r.BillingPeriodStart) {
		errs.add(row+"billing_period_end", "must not be before billing_period_start")
	}
}

// rowOf is the CostRow of an item of the five-column format.
func (c CostInput) rowOf() CostRow {
	return CostRow{
		AccountID: c.AccountID, Service: c.Service, UsageDate: c.UsageDate,
		Amount: FormatAmount(c.Amount), Currency: c.Currency,
	}
}

// String names r for logs and test failures.
func (r CostRow) String() string {
	return fmt.Sprintf("%s %s %s %s %s", r.AccountID, r.Service, r.UsageDate.Format(DateLayout), r.Amount, r.Currency)
}
