package httpapi

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/bulkheadhq/bulkhead/app/finops"
)

func budgetJSON(b finops.Budget) Budget {
	out := Budget{
		Id:        b.ID,
		Name:      b.Name,
		Amount:    finops.FormatAmount(b.Amount),
		Currency:  b.Currency,
		Period:    BudgetPeriod(b.Period),
		Service:   b.Service,
		Provider:  b.Provider,
		TagKey:    b.TagKey,
		TagValue:  b.TagValue,
		CreatedAt: b.CreatedAt,
		UpdatedAt: b.UpdatedAt,
	}
	if b.AccountID != nil {
		id := openapi_types.UUID(*b.AccountID)
		out.AccountId = &id
	}
	return out
}

func budgetStatusJSON(st finops.BudgetStatus) Budget {
	out := budgetJSON(st.Budget)
	spent, remaining := finops.FormatAmount(st.Spent), finops.FormatAmount(st.Remaining)
	start, end := openapi_types.Date{Time: st.PeriodStart}, openapi_types.Date{Time: st.PeriodEnd}
	out.Spent, out.Remaining, out.PeriodStart, out.PeriodEnd = &spent, &remaining, &start, &end
	return out
}

// CreateBudget creates a budget of the key's tenant.
func (h *handlers) CreateBudget(c echo.Context) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	var body BudgetCreate
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	st, err := h.finops.CreateBudget(c.Request().Context(), p.Tenant, finops.BudgetInput{
		Name: body.Name, Amount: body.Amount, Currency: body.Currency, Period: body.Period,
		AccountID: body.AccountId, Service: body.Service,
		Provider: body.Provider, TagKey: body.TagKey, TagValue: body.TagValue,
	})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/budgets/"+st.ID.String())
	return c.JSON(http.StatusCreated, budgetStatusJSON(st))
}

// ListBudgets lists the tenant's budgets, a page at a time.
func (h *handlers) ListBudgets(c echo.Context, params ListBudgetsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	page, err := pageOf(params.Limit, params.Cursor)
	if err != nil {
		return err
	}
	list, next, err := h.finops.Budgets(c.Request().Context(), p.Tenant, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, BudgetPage{Items: convert(list, budgetJSON), NextCursor: cursorJSON(next)})
}

// GetBudget returns one budget with its spending in the period containing
// ?at (today, UTC, by default); another tenant's is not found.
func (h *handlers) GetBudget(c echo.Context, id ID, params GetBudgetParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	at := time.Now()
	if params.At != nil {
		at = params.At.Time
	}
	st, err := h.finops.Budget(c.Request().Context(), p.Tenant, uuid.UUID(id), at)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, budgetStatusJSON(st))
}

// DeleteBudget deletes one budget.
func (h *handlers) DeleteBudget(c echo.Context, id ID) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	if err := h.finops.DeleteBudget(c.Request().Context(), p.Tenant, uuid.UUID(id)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
