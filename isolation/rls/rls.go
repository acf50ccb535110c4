// Package rls is the shared-tables isolation strategy: every tenant's rows
// live in the same tables of the public schema, and PostgreSQL Row-Level
// Security, forced and keyed on the transaction-local app.tenant_id, keeps
// each transaction to one tenant's rows. Provisioning is free; it scales to
// thousands of tenants on one cluster, and past one on Citus, where the
// shared tables are distributed on tenant_id, co-located, so that each
// tenant's rows of every table sit together on one worker.
package rls

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// schema holds the shared tenant tables. It is public so that the serving
// role needs no session-level search_path, which a transaction-mode pooler
// could not keep; the binding sets one transaction-locally.
const schema = isolation.SharedSchema

// Strategy is the shared-tables strategy. It is safe for concurrent use.
type Strategy struct {
	app   *pgxpool.Pool
	owner *pgxpool.Pool
	opts  isolation.Options
	// citus is whether the database is a Citus coordinator, whose
	// workers see the binding only when it is SET LOCAL (Run).
	citus isolation.CitusProbe
}

var (
	_ isolation.Strategy      = (*Strategy)(nil)
	_ isolation.Shared        = (*Strategy)(nil)
	_ isolation.SystemGranter = (*Strategy)(nil)
)

// Descriptor describes the strategy to the registry. It takes no
// configuration of its own.
var Descriptor = isolation.Descriptor{
	Name:    isolation.RLS,
	Summary: "shared tables under forced Row-Level Security",
	New: func(d isolation.Deps, _ isolation.Config) (isolation.Strategy, error) {
		return New(d.App, d.Owner, isolation.WithCitus(d.Citus)), nil
	},
}

// New returns the strategy serving with app (the serving role's pool) and
// provisioning with owner (a pool whose sessions act as the owner role).
// Either may be nil in a process that does not need it; the methods that
// need the missing one then return an error.
func New(app, owner *pgxpool.Pool, opts ...isolation.Option) *Strategy {
	return &Strategy{app: app, owner: owner, opts: isolation.NewOptions(opts...)}
}

// Name returns isolation.RLS.
func (s *Strategy) Name() string { return isolation.RLS }

// Setup migrates the shared tenant tables, distributes them on Citus (every
// run: a table a new migration added is distributed too) and grants the
// serving role DML on them.
func (s *Strategy) Setup(ctx context.Context) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	if _, err := isolation.MigrateTenantTables(ctx, s.owner.Config().ConnConfig, schema); err != nil {
		return err
	}
	citus, err := isolation.UseCitus(ctx, s.owner, s.opts.Citus)
	if err != nil {
		return err
	}
	s.citus.Learn(citus)
	if citus {
		if err := isolation.DistributeTenantTables(ctx, s.owner, schema); err != nil {
			return err
		}
	}
	return isolation.GrantTenantTables(ctx, s.owner, schema, isolation.AppRole)
}

// Provision records nothing: a tenant of shared tables needs no storage of
// its own. The zero tenant is isolation.ErrNoTenant, as it is to every
// strategy.
func (s *Strategy) Provision(_ context.Context, t isolation.Tenant) (isolation.Tenant, error) {
	if t.ID == uuid.Nil {
		return t, isolation.ErrNoTenant
	}
	t.Strategy, t.Server, t.Placement = isolation.RLS, "", ""
	return t, nil
}

// Deprovision deletes every row of t from every tenant table, in one
// transaction bound to t, so that even this runs under the tenant policy.
// Referencing tables go first, so no foreign key needs deferring: Citus
// does not carry SET CONSTRAINTS to its workers.
func (s *Strategy) Deprovision(ctx context.Context, t isolation.Tenant) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	opts, err := isolation.Bind(t.ID)
	if err != nil {
		return err
	}
	return pgx.BeginTxFunc(ctx, s.owner, opts, func(tx pgx.Tx) error {
		if err := isolation.DeleteTenantRows(ctx, tx, schema, t.ID); err != nil {
			return fmt.Errorf("deprovision %s: %w", t, err)
		}
		return nil
	})
}

// Migrate reports the shared tables' version: they are migrated once, by
// Setup, for every tenant.
func (s *Strategy) Migrate(ctx context.Context, _ isolation.Tenant) (int64, error) {
	q, err := s.any()
	if err != nil {
		return 0, err
	}
	return isolation.TenantVersion(ctx, q, schema)
}

// searchPath is the binding's search_path: the shared tables, then pg_temp.
var searchPath = isolation.SearchPath(schema)

// Run runs fn in a transaction of the serving pool bound to t. The binding
// is the tenant setting and searchPath, set transaction-locally in the
// transaction's BEGIN; under isolation.OneRead, the statement and the
// COMMIT ride along too (isolation.RunOn), and the binding is one call of
// set_config per setting, except on Citus, whose workers see only SET
// LOCAL. The connection is released in a deferred call, so a panic in fn
// returns it: rolled back, or else destroyed by pgxpool rather than
// reused in a transaction.
func (s *Strategy) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	if s.app == nil {
		return isolation.ErrNoApp
	}
	bind, err := isolation.BindStatements(ctx, t.ID, searchPath)
	if err != nil {
		return err
	}
	citus, err := s.citus.Citus(ctx, s.app, s.opts.Citus)
	if err != nil {
		return err
	}
	if citus {
		bind = isolation.Unfolded(bind)
	}
	conn, err := s.app.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	return isolation.MarkStale(isolation.RunOn(ctx, conn.Conn(), bind, fn))
}

// SharedSchema is the schema of the shared tenant tables
// (isolation.Shared).
func (s *Strategy) SharedSchema() string { return schema }

// GrantSystem grants the system role SELECT on the shared tables, for its
// cross-tenant reports, and nothing else (isolation.SystemGranter).
func (s *Strategy) GrantSystem(ctx context.Context) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	if _, err := s.owner.Exec(ctx, `GRANT SELECT ON ALL TABLES IN SCHEMA `+pgx.Identifier{schema}.Sanitize()+
		` TO `+pgx.Identifier{isolation.SystemRole}.Sanitize()); err != nil {
		return fmt.Errorf("grant the system role: %w", err)
	}
	return nil
}

// Verify checks the shared tenant tables (verify.TenantTables).
func (s *Strategy) Verify(ctx context.Context) ([]isolation.Finding, error) {
	q, err := s.any()
	if err != nil {
		return nil, err
	}
	return verify.TenantTables(ctx, q, schema)
}

// Ready reports whether the shared tables are at the migration head.
func (s *Strategy) Ready(ctx context.Context) (isolation.Degraded, error) {
	q, err := s.any()
	if err != nil {
		return nil, err
	}
	v, err := isolation.TenantVersion(ctx, q, schema)
	if err != nil {
		return nil, err
	}
	if head := migrations.Tenant.Head(); v != head {
		return nil, &isolation.NotReadyError{Reason: fmt.Sprintf("tenant tables are at version %d, head is %d: run bulkhead migrate", v, head)}
	}
	return nil, nil
}

// any returns the serving pool, or the owner's when there is none.
func (s *Strategy) any() (*pgxpool.Pool, error) {
	switch {
	case s.app != nil:
		return s.app, nil
	case s.owner != nil:
		return s.owner, nil
	}
	return nil, isolation.ErrNoApp
}
