package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
)

func tenantJSON(t control.Tenant) Tenant {
	created, version := t.CreatedAt, t.Version
	return Tenant{
		Id:           t.ID,
		Slug:         t.Slug,
		Name:         t.Name,
		Isolation:    TenantIsolation(t.Isolation),
		Status:       TenantStatus(t.Status),
		Server:       nonEmpty(t.Server),
		Placement:    nonEmpty(t.Placement),
		Version:      &version,
		MigrateError: nonEmpty(t.MigrateError),
		MigratedAt:   t.MigratedAt,
		CreatedAt:    &created,
	}
}

// nonEmpty is s, or nil (the field left out) when s is empty.
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// AdminCreateTenant provisions a tenant.
func (h *handlers) AdminCreateTenant(c echo.Context) error {
	var body TenantCreate
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	name := ""
	if body.Name != nil {
		name = *body.Name
	}
	t, err := h.control.CreateTenant(c.Request().Context(), body.Slug, name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, tenantJSON(t))
}

// AdminListTenants lists every tenant.
func (h *handlers) AdminListTenants(c echo.Context) error {
	list, err := h.control.Tenants(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, TenantList{Items: convert(list, tenantJSON)})
}

// AdminGetTenant returns one tenant.
func (h *handlers) AdminGetTenant(c echo.Context, slug Slug) error {
	t, err := h.control.Tenant(c.Request().Context(), slug)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantJSON(t))
}

// AdminDeleteTenant deletes a tenant and all of its data.
func (h *handlers) AdminDeleteTenant(c echo.Context, slug Slug) error {
	if _, err := h.control.DeleteTenant(c.Request().Context(), slug); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// AdminSuspendTenant suspends a tenant: its keys get 403 until resumed.
func (h *handlers) AdminSuspendTenant(c echo.Context, slug Slug) error {
	return h.setStatus(c, slug, control.StatusSuspended)
}

// AdminResumeTenant resumes a suspended tenant.
func (h *handlers) AdminResumeTenant(c echo.Context, slug Slug) error {
	return h.setStatus(c, slug, control.StatusActive)
}

func (h *handlers) setStatus(c echo.Context, slug, status string) error {
	t, err := h.control.SetStatus(c.Request().Context(), slug, status)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tenantJSON(t))
}

// AdminCreateKey makes a key for a tenant; its secret is shown only here.
func (h *handlers) AdminCreateKey(c echo.Context, slug Slug) error {
	var body KeyCreate
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &body); err != nil {
			return err
		}
	}
	var roleName string
	if body.Role != nil {
		roleName = string(*body.Role)
	}
	role, err := auth.ParseRole(roleName)
	if err != nil {
		return &store.ValidationError{Field: "role", Msg: err.Error()}
	}
	k, err := h.control.CreateKey(c.Request().Context(), slug, role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, Key{Id: k.ID, Key: k.Key, Tenant: k.Tenant, Role: KeyRole(k.Role)})
}

// AdminRevokeKey revokes a key.
func (h *handlers) AdminRevokeKey(c echo.Context, keyID string) error {
	if err := h.control.RevokeKey(c.Request().Context(), keyID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
