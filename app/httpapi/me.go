package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// GetMe answers who the key speaks for — its tenant's slug and name — and
// its role, so that a client knows whether to offer writing.
func (h *handlers) GetMe(c echo.Context) error {
	p, err := principal(c)
	if err != nil {
		return err
	}
	t, err := h.control.Tenant(c.Request().Context(), p.Tenant.Slug)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, Me{
		Tenant:  MeTenant{Slug: t.Slug, Name: t.Name},
		Role:    MeRole(p.Role),
		KeyId:   p.KeyID,
		Issuer:  optional(p.Issuer),
		Subject: optional(p.Subject),
	})
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
