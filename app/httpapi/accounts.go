package httpapi

import (
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/finops"
)

func accountJSON(a finops.Account) Account {
	return Account{
		Id:         a.ID,
		Provider:   Provider(a.Provider),
		ExternalId: a.ExternalID,
		Name:       a.Name,
		CreatedAt:  a.CreatedAt,
		UpdatedAt:  a.UpdatedAt,
	}
}

// accountInput decodes an account body. Creation and update share the
// shape; which fields are required is the domain's to say.
func accountInput(c echo.Context) (finops.AccountInput, error) {
	var body AccountUpdate
	if err := decodeJSON(c, &body); err != nil {
		return finops.AccountInput{}, err
	}
	return finops.AccountInput{Provider: body.Provider, ExternalID: body.ExternalId, Name: body.Name}, nil
}

// CreateAccount creates an account of the key's tenant.
func (h *handlers) CreateAccount(c echo.Context) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	in, err := accountInput(c)
	if err != nil {
		return err
	}
	a, err := h.finops.CreateAccount(c.Request().Context(), p.Tenant, in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/accounts/"+a.ID.String())
	c.Response().Header().Set(headerETag, versionTag(a.UpdatedAt))
	return c.JSON(http.StatusCreated, accountJSON(a))
}

// ListAccounts lists the key's tenant's accounts, a page at a time.
func (h *handlers) ListAccounts(c echo.Context, params ListAccountsParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	page, err := pageOf(params.Limit, params.Cursor)
	if err != nil {
		return err
	}
	list, next, err := h.finops.Accounts(c.Request().Context(), p.Tenant, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AccountPage{Items: convert(list, accountJSON), NextCursor: cursorJSON(next)})
}

// GetAccount returns one account with its ETag (304 when If-None-Match
// names it); another tenant's is not found.
func (h *handlers) GetAccount(c echo.Context, id ID, params GetAccountParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	a, err := h.finops.Account(c.Request().Context(), p.Tenant, uuid.UUID(id))
	if err != nil {
		return err
	}
	return versioned(c, a.UpdatedAt, params.IfNoneMatch, accountJSON(a))
}

// UpdateAccount changes the given fields of one account; with If-Match,
// only while the account is at a version it names (else 412).
func (h *handlers) UpdateAccount(c echo.Context, id ID, params UpdateAccountParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	in, err := accountInput(c)
	if err != nil {
		return err
	}
	a, err := h.finops.UpdateAccount(c.Request().Context(), p.Tenant, uuid.UUID(id), in, precondition(params.IfMatch))
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, versionTag(a.UpdatedAt))
	return c.JSON(http.StatusOK, accountJSON(a))
}

// DeleteAccount deletes one account; with If-Match, only while it is at a
// version it names (else 412).
func (h *handlers) DeleteAccount(c echo.Context, id ID, params DeleteAccountParams) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	if err := h.finops.DeleteAccount(c.Request().Context(), p.Tenant, uuid.UUID(id), precondition(params.IfMatch)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// pageOf checks the limit and cursor query parameters.
func pageOf(limit *Limit, cursor *Cursor) (finops.Page, error) {
	var p finops.Page
	if limit != nil {
		if *limit < 1 || *limit > finops.MaxPageSize {
			return p, badRequest("limit: must be 1 to 1000")
		}
		p.Limit = *limit
	}
	if cursor != nil {
		p.Cursor = *cursor
	}
	return p, nil
}

func cursorJSON(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

// convert returns the items of in, each converted by to: a page of the
// domain's values as the API's.
func convert[T, U any](in []T, to func(T) U) []U {
	out := make([]U, len(in))
	for i, x := range in {
		out[i] = to(x)
	}
	return out
}
