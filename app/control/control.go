// Package control is Bulkhead's control plane: tenants and where they live,
// API keys, and migrating everything. Its tables live in the bulkhead schema
// of the database.url database. Writes go through the owner pool; the
// serving role only reads, to authenticate.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Tenant statuses.
const (
	StatusProvisioning = "provisioning"
	StatusActive       = "active"
	StatusSuspended    = "suspended"
	StatusDeleting     = "deleting"
)

// Tenant is a tenant as the control plane records it.
type Tenant struct {
	ID           uuid.UUID  `json:"id"`
	Slug         string     `json:"slug"`
	Name         string     `json:"name"`
	Isolation    string     `json:"isolation"`
	Status       string     `json:"status"`
	Server       string     `json:"server,omitempty"`
	Placement    string     `json:"placement,omitempty"`
	Version      int64      `json:"version"`
	MigrateError string     `json:"migrate_error,omitempty"`
	MigratedAt   *time.Time `json:"migrated_at,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
}

// Isolated is t as the isolation layer binds it.
func (t Tenant) Isolated() isolation.Tenant {
	return isolation.Tenant{ID: t.ID, Slug: t.Slug, Strategy: t.Isolation, Server: t.Server, Placement: t.Placement}
}

// ValidSlug reports whether s is a valid tenant slug: 3 to 63 characters of
// a-z, 0-9 and -, starting with a letter (config.ValidSlug, the one rule).
func ValidSlug(s string) bool { return config.ValidSlug(s) }

func checkSlug(s string) error {
	if !ValidSlug(s) {
		return &store.ValidationError{Field: "slug", Msg: "must be 3-63 characters of a-z, 0-9 and -, starting with a letter"}
	}
	return nil
}

// Service is the control plane. It is safe for concurrent use.
type Service struct {
	app        *pgxpool.Pool // serving role: authentication and readiness
	owner      *pgxpool.Pool // owner: every write
	strategies *isolation.Registry
	cfg        *config.Config
	log        *slog.Logger
	keys       *keyCache // authenticated keys, see Authenticate
}

// New returns the control plane over pools, provisioning with the default
// of strategies.
func New(pools *postgres.Pools, strategies *isolation.Registry, cfg *config.Config, log *slog.Logger) *Service {
	return &Service{app: pools.App, owner: pools.Owner, strategies: strategies, cfg: cfg, log: log,
		keys: newKeyCache(keyCacheSize, time.Now)}
}

// deprovision removes t's storage on its strategy.
func (s *Service) deprovision(ctx context.Context, t isolation.Tenant) error {
	st, err := s.strategies.For(t)
	if err != nil {
		return err
	}
	return st.Deprovision(ctx, t)
}

// writer returns the owner pool, which every control-plane write needs.
func (s *Service) writer() (*pgxpool.Pool, error) {
	if s.owner == nil {
		return nil, isolation.ErrNoOwner
	}
	return s.owner, nil
}

// reader returns a pool that can read the control plane.
func (s *Service) reader() (*pgxpool.Pool, error) {
	switch {
	case s.owner != nil:
		return s.owner, nil
	case s.app != nil:
		return s.app, nil
	}
	return nil, errors.New("no database configured: set database.url or database.migrate_url")
}

const tenantColumns = `id, slug, name, isolation, status, server, placement, version, migrate_error, migrated_at, created_at`

func scanTenant(row pgx.Row) (Tenant, error) {
	var t Tenant
	err := row.Scan(&t.ID, &t.Slug, &t.Name, &t.Isolation, &t.Status, &t.Server, &t.Placement,
		&t.Version, &t.MigrateError, &t.MigratedAt, &t.CreatedAt)
	return t, store.Translate(err)
}

// Tenants lists every tenant, ordered by slug.
func (s *Service) Tenants(ctx context.Context) ([]Tenant, error) {
	db, err := s.reader()
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM bulkhead.tenants ORDER BY slug`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", store.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// Tenant returns the tenant called slug, or store.ErrNotFound.
func (s *Service) Tenant(ctx context.Context, slug string) (Tenant, error) {
	if !ValidSlug(slug) {
		return Tenant{}, store.ErrNotFound
	}
	db, err := s.reader()
	if err != nil {
		return Tenant{}, err
	}
	return scanTenant(db.QueryRow(ctx, `SELECT `+tenantColumns+` FROM bulkhead.tenants WHERE slug = $1`, slug))
}

// CreateTenant is CreateTenantAt with the configured strategy.
func (s *Service) CreateTenant(ctx context.Context, slug, name string) (Tenant, error) {
	return s.CreateTenantAt(ctx, slug, name, Placement{})
}

// CheckPlacement holds a tenant's destination to the deployment: a strategy
// it runs and isolation.allowed lists, a server only for the database
// strategy and only one it has. field names the request's field of the
// strategy. A refusal is a *store.ValidationError.
func (s *Service) CheckPlacement(field string, to Placement) error {
	st, err := s.strategies.Named(to.Isolation)
	if err != nil || (s.cfg != nil && !s.cfg.Allows(to.Isolation)) {
		allowed := s.strategies.Names()
		if s.cfg != nil && len(s.cfg.Isolation.Allowed) > 0 {
			allowed = s.cfg.Isolation.Allowed
		}
		return &store.ValidationError{Field: field, Msg: fmt.Sprintf("%q is not one of the strategies this deployment allows (isolation.allowed: %s)",
			to.Isolation, strings.Join(allowed, ", "))}
	}
	if to.Server == "" {
		return nil
	}
	h, ok := st.(serverHolder)
	if !ok {
		return &store.ValidationError{Field: "server", Msg: "a server is chosen only for the database strategy"}
	}
	if !h.HasServer(to.Server) {
		return &store.ValidationError{Field: "server", Msg: fmt.Sprintf("%q is not a server of isolation.database.servers", to.Server)}
	}
	return nil
}

// serverHolder is a strategy placing tenants on named servers (the
// database strategy).
type serverHolder interface {
	HasServer(name string) bool
}

// CreateTenantAt records a tenant and provisions its storage at the
// migration head with the strategy at.Isolation (the configured one when
// empty) and, for the database strategy, on the server at.Server (the
// least loaded when empty). name defaults to slug. A destination the
// deployment does not allow is a *store.ValidationError (CheckPlacement);
// a slug already taken, a *store.ConflictError. If provisioning fails,
// nothing of the tenant is left behind.
func (s *Service) CreateTenantAt(ctx context.Context, slug, name string, at Placement) (Tenant, error) {
	if err := checkSlug(slug); err != nil {
		return Tenant{}, err
	}
	if name == "" {
		name = slug
	}
	if msg := store.CheckText(name); msg != "" {
		return Tenant{}, &store.ValidationError{Field: "name", Msg: msg}
	}
	if at.Isolation == "" {
		at.Isolation = s.strategies.Default().Name()
	}
	if err := s.CheckPlacement("isolation", at); err != nil {
		return Tenant{}, err
	}
	db, err := s.writer()
	if err != nil {
		return Tenant{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Tenant{}, err
	}
	strategy := at.Isolation
	st, err := s.strategies.Named(strategy)
	if err != nil {
		return Tenant{}, err
	}
	if strategy != s.strategies.Default().Name() {
		// A deployment migrated before the strategy was allowed has not
		// set it up. Setup is idempotent (the move does the same).
		if err := st.Setup(ctx); err != nil {
			return Tenant{}, fmt.Errorf("set up the %s strategy: %w", strategy, err)
		}
	}
	if _, err := db.Exec(ctx,
		`INSERT INTO bulkhead.tenants (id, slug, name, isolation, status) VALUES ($1, $2, $3, $4, $5)`,
		id, slug, name, strategy, StatusProvisioning); err != nil {
		err = store.Translate(err)
		var conflict *store.ConflictError
		if errors.As(err, &conflict) && conflict.Constraint == "tenants_slug_key" {
			return Tenant{}, &store.ConflictError{Constraint: conflict.Constraint, Msg: "a tenant with slug " + slug + " already exists"}
		}
		return Tenant{}, fmt.Errorf("create tenant %s: %w", slug, err)
	}
	t := isolation.Tenant{ID: id, Slug: slug, Strategy: strategy, Server: at.Server}
	placed, err := st.Provision(ctx, t)
	var version int64
	if err == nil {
		version, err = st.Migrate(ctx, placed)
	}
	if err != nil {
		s.undoCreate(t, placed)
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", slug, err)
	}
	var out Tenant
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		out, err = scanTenant(tx.QueryRow(ctx, `
			UPDATE bulkhead.tenants
			SET status = $2, server = $3, placement = $4, version = $5, migrated_at = now(), updated_at = now()
			WHERE id = $1
			RETURNING `+tenantColumns,
			id, StatusActive, placed.Server, placed.Placement, version))
		if err != nil {
			return err
		}
		_, err = appendAudit(ctx, tx, Event{Action: ActionTenantCreate, Tenants: []string{slug},
			Detail: map[string]any{"id": id, "isolation": strategy, "server": placed.Server, "placement": placed.Placement}})
		return err
	})
	if err != nil {
		s.undoCreate(t, placed)
		return Tenant{}, fmt.Errorf("activate tenant %s: %w", slug, err)
	}
	s.log.Info("tenant created", "tenant", slug, "tenant_id", id, "isolation", strategy, "placement", placed.Placement)
	return out, nil
}

// undoCreate removes what a failed CreateTenant made. It runs on its own
// context: the caller's may be what failed.
func (s *Service) undoCreate(t, placed isolation.Tenant) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if placed.Strategy == "" {
		placed = t
	}
	if err := s.deprovision(ctx, placed); err != nil {
		s.log.Error("undo tenant provisioning", "tenant", t.Slug, "tenant_id", t.ID, "err", err)
		// Keep the row, marked, so an operator can see and delete it.
		return
	}
	if _, err := s.owner.Exec(ctx, `DELETE FROM bulkhead.tenants WHERE id = $1`, t.ID); err != nil {
		s.log.Error("undo tenant record", "tenant", t.Slug, "tenant_id", t.ID, "err", err)
	}
}

// SetStatus suspends (StatusSuspended) or resumes (StatusActive) the tenant
// called slug. A suspended tenant's keys are refused with 403.
func (s *Service) SetStatus(ctx context.Context, slug, status string) (Tenant, error) {
	if status != StatusActive && status != StatusSuspended {
		return Tenant{}, fmt.Errorf("set status %q: not a settable status", status)
	}
	db, err := s.writer()
	if err != nil {
		return Tenant{}, err
	}
	action := ActionTenantResume
	if status == StatusSuspended {
		action = ActionTenantSuspend
	}
	var t Tenant
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		t, err = scanTenant(tx.QueryRow(ctx, `
			UPDATE bulkhead.tenants SET status = $2, updated_at = now()
			WHERE slug = $1 AND status IN ('active', 'suspended')
			RETURNING `+tenantColumns, slug, status))
		if err != nil {
			return err
		}
		_, err = appendAudit(ctx, tx, Event{Action: action, Tenants: []string{slug}})
		return err
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("set status of %s: %w", slug, err)
	}
	s.keys.invalidate()
	s.log.Info("tenant status changed", "tenant", slug, "tenant_id", t.ID, "status", status)
	return t, nil
}

// DeleteTenant removes the tenant called slug: every row, schema, role or
// database it has, its keys, and its record. It first marks the tenant
// deleting, so that its keys stop working before its storage goes; a failed
// delete can be run again.
func (s *Service) DeleteTenant(ctx context.Context, slug string) (Tenant, error) {
	db, err := s.writer()
	if err != nil {
		return Tenant{}, err
	}
	if !ValidSlug(slug) {
		return Tenant{}, store.ErrNotFound
	}
	row := db.QueryRow(ctx, `
		UPDATE bulkhead.tenants SET status = $2, updated_at = now() WHERE slug = $1
		RETURNING `+tenantColumns, slug, StatusDeleting)
	t, err := scanTenant(row)
	if err != nil {
		return Tenant{}, fmt.Errorf("delete tenant %s: %w", slug, err)
	}
	s.keys.invalidate()
	if err := s.deprovision(ctx, t.Isolated()); err != nil {
		return Tenant{}, fmt.Errorf("deprovision tenant %s: %w", slug, err)
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM bulkhead.tenants WHERE id = $1`, t.ID); err != nil {
			return store.Translate(err)
		}
		_, err := appendAudit(ctx, tx, Event{Action: ActionTenantDelete, Tenants: []string{slug},
			Detail: map[string]any{"id": t.ID, "isolation": t.Isolation, "server": t.Server, "placement": t.Placement}})
		return err
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("delete tenant %s: %w", slug, err)
	}
	s.log.Info("tenant deleted", "tenant", slug, "tenant_id", t.ID)
	return t, nil
}

// RevokeKey revokes the key with public id id; it stops working at once in
// this process and within a second in every other (see Authenticate). An unknown or already revoked key is store.ErrNotFound.
func (s *Service) RevokeKey(ctx context.Context, id string) error {
	db, err := s.writer()
	if err != nil {
		return err
	}
	if !auth.ValidID(id) {
		return store.ErrNotFound
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var slug string
		err := tx.QueryRow(ctx, `
			UPDATE bulkhead.api_keys k SET revoked_at = now()
			FROM bulkhead.tenants t
			WHERE k.id = $1 AND k.revoked_at IS NULL AND t.id = k.tenant_id
			RETURNING t.slug`, id).Scan(&slug)
		if err != nil {
			return store.Translate(err)
		}
		_, err = appendAudit(ctx, tx, Event{Action: ActionKeyRevoke, Tenants: []string{slug}, Detail: map[string]any{"key_id": id}})
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return err
		}
		return fmt.Errorf("revoke key %s: %w", id, err)
	}
	s.keys.invalidate()
	s.log.Info("key revoked", "key_id", id)
	return nil
}

// dummyHash keeps the time of a lookup for an unknown key close to that of
// a known one.
var dummyHash = make([]byte, 32)

// Authenticate resolves a presented token to its principal, reading the
// control plane as the serving role. It returns auth.ErrUnauthenticated for
// a malformed, unknown, revoked or expired key and auth.ErrSuspended for a
// key of a tenant that is not active. It records when the key was last used,
// at most once a minute (touch).
//
// A key that authenticated lately is answered from a bounded in-process
// cache, without a query: for a second after it was read, and for as long
// after as WatchKeys confirms (at least once a second) that the control
// plane's authentication generation has not moved. Every change to a key,
// its tenant or the tenant's limits moves it (a trigger), so a revocation,
// suspension, deletion or new limits made by any process take effect on
// every server within a second, and on this one at once when made through
// this Service. An expiry is kept with the key and holds to the instant.
// Only keys that authenticated are cached; a wrong secret for a cached key
// is refused without a query.
func (s *Service) Authenticate(ctx context.Context, token string) (auth.Principal, error) {
	id, secret, err := auth.Parse(token)
	if err != nil {
		return auth.Principal{}, err
	}
	if k, ok := s.keys.get(id); ok {
		if !auth.Match(secret, k.hash) {
			return auth.Principal{}, auth.ErrUnauthenticated
		}
		if due := k.touchDue.Load(); s.keys.now().UnixNano() >= due &&
			k.touchDue.CompareAndSwap(due, s.keys.now().Add(time.Minute).UnixNano()) {
			s.touch(ctx, id)
		}
		return k.p, nil
	}
	db := s.app
	if db == nil {
		return auth.Principal{}, errors.New("authenticate: database.url is not set")
	}
	epoch, sent := s.keys.begin()
	var (
		k        = &cachedKey{read: sent}
		status   string
		expireIn *float64 // seconds, by the database's clock
		touchIn  *float64
	)
	// The tenant's limit overrides and the authentication generation come
	// in the same query, and the same snapshot: no round trip of their own.
	err = db.QueryRow(ctx, `
		SELECT k.role, k.secret_hash, t.id, t.slug, t.isolation, t.server, t.placement, t.status,
		       COALESCE(l.max_concurrent, 0), COALESCE(l.rate, 0), COALESCE(l.burst, 0),
		       EXTRACT(epoch FROM k.expires_at - now())::float8,
		       EXTRACT(epoch FROM k.last_used_at + `+touchEvery+` - now())::float8,
		       (SELECT gen FROM bulkhead.auth_generation)
		FROM bulkhead.api_keys k JOIN bulkhead.tenants t ON t.id = k.tenant_id
		LEFT JOIN bulkhead.tenant_limits l ON l.tenant_id = t.id
		WHERE k.id = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())`, id,
	).Scan(&k.p.Role, &k.hash, &k.p.Tenant.ID, &k.p.Tenant.Slug, &k.p.Tenant.Strategy, &k.p.Tenant.Server, &k.p.Tenant.Placement, &status,
		&k.p.Limits.MaxConcurrent, &k.p.Limits.Rate, &k.p.Limits.Burst, &expireIn, &touchIn, &k.gen)
	if err = store.Translate(err); errors.Is(err, store.ErrNotFound) {
		auth.Match(secret, dummyHash)
		return auth.Principal{}, auth.ErrUnauthenticated
	} else if err != nil {
		return auth.Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	if !auth.Match(secret, k.hash) {
		return auth.Principal{}, auth.ErrUnauthenticated
	}
	if status != StatusActive {
		return auth.Principal{}, auth.ErrSuspended
	}
	k.p.KeyID = id
	if expireIn != nil {
		k.expires = sent.Add(time.Duration(*expireIn * float64(time.Second)))
	}
	if touchIn == nil || *touchIn <= 0 {
		s.touch(ctx, id)
		k.touchDue.Store(sent.Add(time.Minute).UnixNano())
	} else {
		k.touchDue.Store(sent.Add(time.Duration(*touchIn * float64(time.Second))).UnixNano())
	}
	s.keys.put(id, k, epoch)
	return k.p, nil
}

// TokenPrincipal resolves a verified token's identity to its principal, by
// the tenant's slug, reading the control plane as the serving role like
// Authenticate. A tenant that does not exist or is being deleted is
// auth.ErrUnknownTenant; one that is otherwise not active,
// auth.ErrSuspended.
func (s *Service) TokenPrincipal(ctx context.Context, id auth.Identity) (auth.Principal, error) {
	db := s.app
	if db == nil {
		return auth.Principal{}, errors.New("authenticate: database.url is not set")
	}
	if !ValidSlug(id.Slug) {
		return auth.Principal{}, auth.ErrUnknownTenant
	}
	p := auth.Principal{Role: id.Role, Issuer: id.Issuer, Subject: id.Subject}
	var status string
	// The tenant's limit overrides come in the same query, as for a key.
	err := db.QueryRow(ctx, `
		SELECT t.id, t.slug, t.isolation, t.server, t.placement, t.status,
		       COALESCE(l.max_concurrent, 0), COALESCE(l.rate, 0), COALESCE(l.burst, 0)
		FROM bulkhead.tenants t LEFT JOIN bulkhead.tenant_limits l ON l.tenant_id = t.id
		WHERE t.slug = $1`, id.Slug,
	).Scan(&p.Tenant.ID, &p.Tenant.Slug, &p.Tenant.Strategy, &p.Tenant.Server, &p.Tenant.Placement, &status,
		&p.Limits.MaxConcurrent, &p.Limits.Rate, &p.Limits.Burst)
	if err = store.Translate(err); errors.Is(err, store.ErrNotFound) {
		return auth.Principal{}, auth.ErrUnknownTenant
	} else if err != nil {
		return auth.Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	switch status {
	case StatusActive:
		return p, nil
	case StatusDeleting:
		return auth.Principal{}, auth.ErrUnknownTenant
	}
	return auth.Principal{}, auth.ErrSuspended
}
