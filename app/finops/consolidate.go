package finops

import (
	"context"
	"slices"
	"strings"

	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// consolidateParallelism bounds how many tenants' summaries run at once.
const consolidateParallelism = 4

// Share is one tenant's part of a consolidated total.
type Share struct {
	Tenant string
	Amount decimal.Decimal
}

// ConsolidatedTotal is the cost of one key in one currency over several
// tenants, with each tenant's share (in the order the tenants were given).
type ConsolidatedTotal struct {
	Total
	Shares []Share
}

// TenantTotals is one tenant's total per currency.
type TenantTotals struct {
	Tenant string
	Totals []Total // Key is empty
}

// Consolidated is a summary over several tenants.
type Consolidated struct {
	Items   []ConsolidatedTotal
	Tenants []TenantTotals
}

// Consolidate computes the summary of each tenant inside that tenant's own
// binding — exactly its own Summary, so no tenant filter is lifted — and
// merges them per key and currency. Different currencies are never added
// together. The caller decides which tenants may be read.
func (s *Service) Consolidate(ctx context.Context, tenants []isolation.Tenant, q SummaryQuery) (Consolidated, error) {
	parts := make([][]Total, len(tenants))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(consolidateParallelism)
	for i, t := range tenants {
		eg.Go(func() (err error) {
			parts[i], err = s.Summary(ectx, t, q)
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return Consolidated{}, err
	}
	type mergeKey struct{ key, currency string }
	merged := map[mergeKey]*ConsolidatedTotal{}
	out := Consolidated{Tenants: make([]TenantTotals, len(tenants))}
	for i, t := range tenants {
		perCurrency := map[string]decimal.Decimal{}
		for _, tot := range parts[i] {
			k := mergeKey{tot.Key, tot.Currency}
			m, ok := merged[k]
			if !ok {
				m = &ConsolidatedTotal{Total: Total{Key: tot.Key, Currency: tot.Currency}}
				merged[k] = m
			}
			m.Amount = m.Amount.Add(tot.Amount)
			m.Shares = append(m.Shares, Share{Tenant: t.Slug, Amount: tot.Amount})
			perCurrency[tot.Currency] = perCurrency[tot.Currency].Add(tot.Amount)
		}
		tt := TenantTotals{Tenant: t.Slug, Totals: []Total{}}
		for cur, amt := range perCurrency {
			tt.Totals = append(tt.Totals, Total{Currency: cur, Amount: amt})
		}
		slices.SortFunc(tt.Totals, func(a, b Total) int { return strings.Compare(a.Currency, b.Currency) })
		out.Tenants[i] = tt
	}
	out.Items = make([]ConsolidatedTotal, 0, len(merged))
	for _, m := range merged {
		out.Items = append(out.Items, *m)
	}
	slices.SortFunc(out.Items, func(a, b ConsolidatedTotal) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return strings.Compare(a.Currency, b.Currency)
	})
	return out, nil
}
