package httpapi

import (
	"net/http"
	"time"

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
	var at control.Placement
	if body.Isolation != nil {
		at.Isolation = *body.Isolation
		if at.Isolation == "" {
			return &store.ValidationError{Field: "isolation", Msg: "must be rls, schema or database, or left out"}
		}
	}
	if body.Server != nil {
		at.Server = *body.Server
	}
	t, err := h.control.CreateTenantAt(c.Request().Context(), body.Slug, name, at)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/admin/v1/tenants/"+t.Slug)
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
	k, err := h.control.CreateKeyWith(c.Request().Context(), slug, control.KeySpec{Role: role, ExpiresAt: body.ExpiresAt})
	if err != nil {
		return err
	}
	// The key's resource: where it is revoked (DELETE) and rotated.
	c.Response().Header().Set(echo.HeaderLocation, "/admin/v1/keys/"+k.ID)
	return c.JSON(http.StatusCreated, Key{Id: k.ID, Key: k.Key, Tenant: k.Tenant, Role: KeyRole(k.Role), ExpiresAt: k.ExpiresAt})
}

// AdminListKeys lists a tenant's keys, never a secret.
func (h *handlers) AdminListKeys(c echo.Context, slug Slug) error {
	keys, err := h.control.Keys(c.Request().Context(), slug)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, KeyInfoList{Items: convert(keys, func(k control.KeyInfo) KeyInfo {
		return KeyInfo{
			Id:         k.ID,
			Tenant:     k.Tenant,
			Role:       KeyInfoRole(k.Role),
			Status:     KeyInfoStatus(k.Status),
			CreatedAt:  k.CreatedAt,
			ExpiresAt:  k.ExpiresAt,
			LastUsedAt: k.LastUsedAt,
			RevokedAt:  k.RevokedAt,
		}
	})})
}

// maxRotateGrace bounds a rotation's overlap: a year, as the spec says.
const maxRotateGrace = 365 * 24 * time.Hour

// AdminRotateKey replaces a key; the old one keeps working for the grace
// period.
func (h *handlers) AdminRotateKey(c echo.Context, keyID string) error {
	var body KeyRotate
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &body); err != nil {
			return err
		}
	}
	grace := control.DefaultRotateGrace
	if body.GraceSeconds != nil {
		if *body.GraceSeconds < 0 || *body.GraceSeconds > int64(maxRotateGrace/time.Second) {
			return &store.ValidationError{Field: "grace_seconds", Msg: "must be from 0 to 31536000 (a year)"}
		}
		grace = time.Duration(*body.GraceSeconds) * time.Second
	}
	k, old, err := h.control.RotateKey(c.Request().Context(), keyID, grace, control.KeySpec{ExpiresAt: body.ExpiresAt})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/admin/v1/keys/"+k.ID)
	return c.JSON(http.StatusCreated, KeyRotated{
		Id: k.ID, Key: k.Key, Tenant: k.Tenant, Role: KeyRotatedRole(k.Role), ExpiresAt: k.ExpiresAt,
		Replaces: old.ID, ReplacedExpiresAt: *old.ExpiresAt,
	})
}

// AdminRevokeKey revokes a key.
func (h *handlers) AdminRevokeKey(c echo.Context, keyID string) error {
	if err := h.control.RevokeKey(c.Request().Context(), keyID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
