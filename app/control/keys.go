package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/store"
)

// touchEvery is how stale a key's last_used_at may get before
// authentication writes it again: a write a minute per key in use, not one
// per request. It is SQL, pasted into the queries as a constant.
const touchEvery = `interval '1 minute'`

// DefaultRotateGrace is how long a rotated key keeps working beside its
// successor when no grace period is given.
const DefaultRotateGrace = 24 * time.Hour

// Key is an API key as created: Key is the secret, shown only here.
type Key struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	Tenant    string     `json:"tenant"`
	Role      auth.Role  `json:"role"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// KeySpec is what a new key is to be.
type KeySpec struct {
	Role auth.Role
	// ExpiresAt, when set, is when the key stops working; it must be in the
	// future.
	ExpiresAt *time.Time
}

// KeyInfo is a key as listed: everything but its secret, which is never
// stored.
type KeyInfo struct {
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Role       auth.Role  `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Status is active, expired or revoked, as of the listing.
	Status string `json:"status"`
}

// Key statuses, as listed.
const (
	KeyActive  = "active"
	KeyExpired = "expired"
	KeyRevoked = "revoked"
)

func checkExpiry(at *time.Time, now time.Time) error {
	if at != nil && !at.After(now) {
		return &store.ValidationError{Field: "expires_at", Msg: "must be in the future"}
	}
	return nil
}

// CreateKey makes a key for the tenant called slug that does not expire.
func (s *Service) CreateKey(ctx context.Context, slug string, role auth.Role) (Key, error) {
	return s.CreateKeyWith(ctx, slug, KeySpec{Role: role})
}

// CreateKeyWith makes a key for the tenant called slug as spec says.
func (s *Service) CreateKeyWith(ctx context.Context, slug string, spec KeySpec) (Key, error) {
	db, err := s.writer()
	if err != nil {
		return Key{}, err
	}
	if err := checkExpiry(spec.ExpiresAt, time.Now()); err != nil {
		return Key{}, err
	}
	t, err := s.Tenant(ctx, slug)
	if err != nil {
		return Key{}, fmt.Errorf("create key for %s: %w", slug, err)
	}
	k := auth.NewKey()
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`INSERT INTO bulkhead.api_keys (id, tenant_id, role, secret_hash, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			k.ID, t.ID, string(spec.Role), k.Hash, spec.ExpiresAt); err != nil {
			return store.Translate(err)
		}
		_, err := appendAudit(ctx, tx, Event{Action: ActionKeyCreate, Tenants: []string{slug},
			Detail: map[string]any{"key_id": k.ID, "role": spec.Role, "expires_at": spec.ExpiresAt}})
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("create key for %s: %w", slug, err)
	}
	s.log.Info("key created", "tenant", slug, "tenant_id", t.ID, "key_id", k.ID, "role", spec.Role)
	return Key{ID: k.ID, Key: k.Token, Tenant: slug, Role: spec.Role, ExpiresAt: spec.ExpiresAt}, nil
}

// Keys lists the keys of the tenant called slug, newest first, revoked and
// expired ones included (with their status), never a secret. An unknown
// tenant is store.ErrNotFound.
func (s *Service) Keys(ctx context.Context, slug string) ([]KeyInfo, error) {
	db, err := s.reader()
	if err != nil {
		return nil, err
	}
	t, err := s.Tenant(ctx, slug)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `
		SELECT id, role, created_at, expires_at, last_used_at, revoked_at,
		       CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
		            WHEN expires_at <= now() THEN 'expired' ELSE 'active' END
		FROM bulkhead.api_keys WHERE tenant_id = $1
		ORDER BY created_at DESC, id`, t.ID)
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", slug, store.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyInfo, error) {
		k := KeyInfo{Tenant: slug}
		err := r.Scan(&k.ID, &k.Role, &k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt, &k.Status)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", slug, store.Translate(err))
	}
	if out == nil {
		out = []KeyInfo{}
	}
	return out, nil
}

// RotateKey replaces the key id with a new one of the same tenant, role and
// consolidation grants, which expires as spec says (spec.Role is ignored).
// The old key keeps working for grace, then expires (sooner if it was to
// expire sooner anyway), so that clients can switch without an outage; a
// grace of 0 ends it at once. An unknown, revoked or expired key is
// store.ErrNotFound.
func (s *Service) RotateKey(ctx context.Context, id string, grace time.Duration, spec KeySpec) (Key, KeyInfo, error) {
	db, err := s.writer()
	if err != nil {
		return Key{}, KeyInfo{}, err
	}
	if grace < 0 {
		return Key{}, KeyInfo{}, &store.ValidationError{Field: "grace", Msg: "must not be negative"}
	}
	if err := checkExpiry(spec.ExpiresAt, time.Now()); err != nil {
		return Key{}, KeyInfo{}, err
	}
	if !auth.ValidID(id) {
		return Key{}, KeyInfo{}, store.ErrNotFound
	}
	k := auth.NewKey()
	var (
		nk  Key
		old KeyInfo
	)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// The row lock serialises two rotations of one key: the second
		// finds it already ending only if its grace was shorter.
		err := tx.QueryRow(ctx, `
			SELECT k.id, t.slug, k.role, k.created_at
			FROM bulkhead.api_keys k JOIN bulkhead.tenants t ON t.id = k.tenant_id
			WHERE k.id = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
			FOR UPDATE OF k`, id).Scan(&old.ID, &old.Tenant, &old.Role, &old.CreatedAt)
		if err != nil {
			return store.Translate(err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO bulkhead.api_keys (id, tenant_id, role, secret_hash, expires_at)
			SELECT $2, tenant_id, role, $3, $4 FROM bulkhead.api_keys WHERE id = $1`,
			id, k.ID, k.Hash, spec.ExpiresAt); err != nil {
			return store.Translate(err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO bulkhead.key_grants (key_id, tenant_id)
			SELECT $2, tenant_id FROM bulkhead.key_grants WHERE key_id = $1`, id, k.ID); err != nil {
			return store.Translate(err)
		}
		err = tx.QueryRow(ctx, `
			UPDATE bulkhead.api_keys
			SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + make_interval(secs => $2))
			WHERE id = $1
			RETURNING expires_at, last_used_at`, id, grace.Seconds()).Scan(&old.ExpiresAt, &old.LastUsedAt)
		if err != nil {
			return store.Translate(err)
		}
		old.Status = KeyActive
		if grace == 0 {
			old.Status = KeyExpired
		}
		nk = Key{ID: k.ID, Key: k.Token, Tenant: old.Tenant, Role: old.Role, ExpiresAt: spec.ExpiresAt}
		_, err = appendAudit(ctx, tx, Event{Action: ActionKeyRotate, Tenants: []string{old.Tenant},
			Detail: map[string]any{"key_id": id, "new_key_id": k.ID, "old_expires_at": old.ExpiresAt, "expires_at": spec.ExpiresAt}})
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Key{}, KeyInfo{}, err
		}
		return Key{}, KeyInfo{}, fmt.Errorf("rotate key %s: %w", id, err)
	}
	s.keys.invalidate()
	s.log.Info("key rotated", "tenant", old.Tenant, "key_id", id, "new_key_id", k.ID, "old_expires_at", old.ExpiresAt)
	return nk, old, nil
}

// touch records that key id was used, unless another request (in this
// process or another) did so within touchEvery: the WHERE makes concurrent
// touches write once. It runs as the serving role, whose only write on the
// control plane this is (a column privilege on last_used_at), and a failure
// costs only the bookkeeping, never the request.
func (s *Service) touch(ctx context.Context, id string) {
	_, err := s.app.Exec(ctx, `
		UPDATE bulkhead.api_keys SET last_used_at = now()
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - `+touchEvery+`)`, id)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("record key use", "key_id", id, "err", store.Translate(err))
	}
}
