package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
)

// maxConsolidated bounds the tenants of one consolidated report.
const maxConsolidated = 100

// ConsolidatedCostSummary merges the cost summaries of tenants the key may
// read: its own and those it was granted. Any other slug is a 404, worded
// as for a tenant that does not exist.
func (h *handlers) ConsolidatedCostSummary(c echo.Context, params ConsolidatedCostSummaryParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	var slugs []string
	seen := map[string]bool{}
	for _, s := range strings.Split(params.Tenants, ",") {
		if s = strings.TrimSpace(s); s != "" && !seen[s] {
			seen[s] = true
			slugs = append(slugs, s)
		}
	}
	switch {
	case len(slugs) == 0:
		return badRequest("tenants: give at least one tenant slug")
	case len(slugs) > maxConsolidated:
		return badRequest("tenants: at most 100 tenants")
	}
	f, err := costFilter(nil, params.From, params.To, params.Service, params.ServiceCategory, params.Provider,
		params.BillingAccount, params.Region, params.ChargeCategory, params.Tag)
	if err != nil {
		return err
	}
	q := summaryQuery(f, params.GroupBy, (*string)(params.Metric))
	tenants, err := h.control.Readable(c.Request().Context(), p, slugs)
	if err != nil {
		var ng *control.NotGrantedError
		if errors.As(err, &ng) {
			return newProblem(http.StatusNotFound, "tenant "+ng.Slug+" not found")
		}
		return err
	}
	res, err := h.finops.Consolidate(c.Request().Context(), tenants, q)
	if err != nil {
		return err
	}
	out := ConsolidatedSummary{Items: make([]ConsolidatedTotal, len(res.Items)), Tenants: make([]TenantTotals, len(res.Tenants))}
	for i, it := range res.Items {
		shares := make([]TenantShare, len(it.Shares))
		for j, s := range it.Shares {
			shares[j] = TenantShare{Tenant: s.Tenant, Amount: finops.FormatAmount(s.Amount)}
		}
		out.Items[i] = ConsolidatedTotal{Key: it.Key, Currency: it.Currency, Amount: finops.FormatAmount(it.Amount), Shares: shares}
	}
	for i, t := range res.Tenants {
		tt := TenantTotals{Tenant: t.Tenant, Totals: []CurrencyTotal{}}
		for _, tot := range t.Totals {
			tt.Totals = append(tt.Totals, CurrencyTotal{Amount: finops.FormatAmount(tot.Amount), Currency: tot.Currency})
		}
		out.Tenants[i] = tt
	}
	return c.JSON(http.StatusOK, out)
}

// AdminListGrants lists the tenants a key may read besides its own.
func (h *handlers) AdminListGrants(c echo.Context, keyID string) error {
	slugs, err := h.control.Grants(c.Request().Context(), keyID)
	if err != nil {
		return err
	}
	if slugs == nil {
		slugs = []string{}
	}
	return c.JSON(http.StatusOK, GrantList{Items: slugs})
}

// AdminGrantKey lets a key read another tenant in consolidated reports.
func (h *handlers) AdminGrantKey(c echo.Context, keyID string) error {
	var body GrantCreate
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	if err := h.control.GrantKey(c.Request().Context(), keyID, body.Tenant); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// AdminUngrantKey withdraws a grant.
func (h *handlers) AdminUngrantKey(c echo.Context, keyID string, slug Slug) error {
	if err := h.control.UngrantKey(c.Request().Context(), keyID, slug); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
