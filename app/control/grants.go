package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// GrantKey lets the key keyID read the tenant called slug in consolidated
// reports. Granting twice is not an error. An unknown key or tenant is
// store.ErrNotFound.
func (s *Service) GrantKey(ctx context.Context, keyID, slug string) error {
	return s.changeGrant(ctx, keyID, slug, true)
}

// UngrantKey withdraws a grant; it takes effect on the next request. A grant
// that does not exist is store.ErrNotFound.
func (s *Service) UngrantKey(ctx context.Context, keyID, slug string) error {
	return s.changeGrant(ctx, keyID, slug, false)
}

func (s *Service) changeGrant(ctx context.Context, keyID, slug string, grant bool) error {
	db, err := s.writer()
	if err != nil {
		return err
	}
	if !auth.ValidID(keyID) || !ValidSlug(slug) {
		return store.ErrNotFound
	}
	action := ActionKeyUngrant
	if grant {
		action = ActionKeyGrant
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var owner string
		err := tx.QueryRow(ctx, `
			SELECT t.slug FROM bulkhead.api_keys k JOIN bulkhead.tenants t ON t.id = k.tenant_id
			WHERE k.id = $1 AND k.revoked_at IS NULL`, keyID).Scan(&owner)
		if err != nil {
			return store.Translate(err)
		}
		var tag int64
		if grant {
			ct, err := tx.Exec(ctx, `
				INSERT INTO bulkhead.key_grants (key_id, tenant_id)
				SELECT $1, id FROM bulkhead.tenants WHERE slug = $2
				ON CONFLICT DO NOTHING`, keyID, slug)
			if err != nil {
				return store.Translate(err)
			}
			tag = ct.RowsAffected()
			if tag == 0 {
				var exists bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM bulkhead.tenants WHERE slug = $1)`, slug).Scan(&exists); err != nil {
					return err
				}
				if !exists {
					return store.ErrNotFound
				}
				return nil // already granted
			}
		} else {
			ct, err := tx.Exec(ctx, `
				DELETE FROM bulkhead.key_grants g USING bulkhead.tenants t
				WHERE g.key_id = $1 AND g.tenant_id = t.id AND t.slug = $2`, keyID, slug)
			if err != nil {
				return store.Translate(err)
			}
			if ct.RowsAffected() == 0 {
				return store.ErrNotFound
			}
		}
		_, err = appendAudit(ctx, tx, Event{Action: action, Tenants: []string{owner, slug}, Detail: map[string]any{"key_id": keyID}})
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s %s to %s: %w", action, keyID, slug, err)
	}
	return err
}

// Grants lists the slugs the key keyID is granted, sorted.
func (s *Service) Grants(ctx context.Context, keyID string) ([]string, error) {
	db, err := s.reader()
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `
		SELECT t.slug FROM bulkhead.key_grants g JOIN bulkhead.tenants t ON t.id = g.tenant_id
		WHERE g.key_id = $1 ORDER BY t.slug`, keyID)
	if err != nil {
		return nil, fmt.Errorf("list grants of %s: %w", keyID, store.Translate(err))
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// NotGrantedError names a tenant a key may not read. It is reported as not
// found: a tenant that is not granted is indistinguishable from one that
// does not exist.
type NotGrantedError struct{ Slug string }

func (e *NotGrantedError) Error() string { return "tenant " + e.Slug + ": not found" }

// Is makes a NotGrantedError a store.ErrNotFound.
func (e *NotGrantedError) Is(target error) bool { return target == store.ErrNotFound }

// Readable resolves slugs to the tenants the principal may read: its own
// tenant, and the active tenants its key is granted. Reading the grants
// happens as the serving role, on every call, so a withdrawn grant takes
// effect on the next request. The first slug that is not readable is a
// *NotGrantedError.
func (s *Service) Readable(ctx context.Context, p auth.Principal, slugs []string) ([]isolation.Tenant, error) {
	if s.app == nil {
		return nil, errors.New("readable tenants: database.url is not set")
	}
	rows, err := s.app.Query(ctx, `
		SELECT t.id, t.slug, t.isolation, t.server, t.placement
		FROM bulkhead.tenants t
		WHERE t.slug = ANY($2) AND t.status = 'active'
		  AND (t.id = $3 OR EXISTS (SELECT FROM bulkhead.key_grants g WHERE g.key_id = $1 AND g.tenant_id = t.id))`,
		p.KeyID, slugs, p.Tenant.ID)
	if err != nil {
		return nil, fmt.Errorf("readable tenants: %w", store.Translate(err))
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (isolation.Tenant, error) {
		var t isolation.Tenant
		err := r.Scan(&t.ID, &t.Slug, &t.Strategy, &t.Server, &t.Placement)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("readable tenants: %w", err)
	}
	bySlug := make(map[string]isolation.Tenant, len(found))
	for _, t := range found {
		bySlug[t.Slug] = t
	}
	out := make([]isolation.Tenant, 0, len(slugs))
	for _, slug := range slugs {
		t, ok := bySlug[slug]
		if !ok {
			return nil, &NotGrantedError{Slug: slug}
		}
		out = append(out, t)
	}
	return out, nil
}
