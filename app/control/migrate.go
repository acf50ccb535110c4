package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// TenantMigration is the outcome of migrating one tenant.
type TenantMigration struct {
	Tenant  string `json:"tenant"`
	Version int64  `json:"version"`
	Head    int64  `json:"head"`
	// State is "current", "behind" or "failed".
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// MigrationReport is the outcome of Migrate, and what MigrateStatus shows.
type MigrationReport struct {
	ControlVersion int64             `json:"control_version"`
	ControlHead    int64             `json:"control_head"`
	TenantHead     int64             `json:"tenant_head"`
	Tenants        []TenantMigration `json:"tenants"`
	Failed         int               `json:"failed"`
}

// ErrMigrationFailed is returned, wrapped, when some tenants failed to migrate;
// the report says which.
var ErrMigrationFailed = errors.New("some tenants failed to migrate")

// Progress receives progress of a long migration.
type Progress func(done, total, failed int)

// Migrate creates the roles Bulkhead needs where the migrate DSN may (or
// names the missing ones), migrates the control plane, sets up each strategy
// isolation.allowed lists or a tenant is in, creates the bootstrap tenant when configured and there are no
// tenants, and migrates every tenant that is behind — in parallel, bounded
// by isolation.migrate_parallelism, continuing past failures, each tenant's
// version and error recorded. A re-run picks up only what is behind.
func (s *Service) Migrate(ctx context.Context, progress Progress) (MigrationReport, error) {
	if s.owner == nil {
		return MigrationReport{}, isolation.ErrNoOwner
	}
	if err := s.migrateControl(ctx); err != nil {
		return MigrationReport{}, err
	}
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return MigrationReport{}, err
	}
	// Every strategy a tenant is in, the default, and every one a tenant
	// may be placed in or moved to (isolation.allowed).
	inUse, err := s.inUse(ctx, s.owner)
	if err != nil {
		return MigrationReport{}, err
	}
	if s.cfg != nil {
		for _, name := range s.cfg.Isolation.Allowed {
			if !slices.Contains(inUse, name) {
				inUse = append(inUse, name)
			}
		}
	}
	if err := s.strategies.Setup(ctx, inUse); err != nil {
		return MigrationReport{}, err
	}
	if s.cfg.System.Enabled {
		// The system role bypasses RLS but still needs privileges: each
		// strategy whose storage it reads outside a binding grants them.
		for _, st := range s.strategies.All() {
			if g, ok := st.(isolation.SystemGranter); ok && slices.Contains(inUse, st.Name()) {
				if err := g.GrantSystem(ctx); err != nil {
					return MigrationReport{}, err
				}
			}
		}
	}
	if slug := s.cfg.Tenants.Bootstrap; slug != "" && len(tenants) == 0 {
		if _, err := s.CreateTenant(ctx, slug, ""); err != nil {
			return MigrationReport{}, fmt.Errorf("bootstrap tenant: %w", err)
		}
	}
	if err := s.migrateTenants(ctx, progress); err != nil {
		return MigrationReport{}, err
	}
	report, err := s.MigrateStatus(ctx)
	if err != nil {
		return report, err
	}
	if report.Failed > 0 {
		return report, fmt.Errorf("%w: %d of %d", ErrMigrationFailed, report.Failed, len(report.Tenants))
	}
	return report, nil
}

// migrateControl bootstraps roles and privileges with the migrate DSN's own
// identity, then migrates the control plane as the owner.
func (s *Service) migrateControl(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.owner.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("connect with database.migrate_url: %w", err)
	}
	defer conn.Close(context.Background())
	if err := isolation.EnsureRoles(ctx, conn, s.cfg.System.Enabled); err != nil {
		return err
	}
	if err := isolation.GrantDatabase(ctx, conn); err != nil {
		return err
	}
	citus, err := isolation.UseCitus(ctx, conn, s.cfg.Database.Citus)
	if err != nil {
		return err
	}
	if citus {
		// The control plane stays in ordinary tables of the coordinator.
		if err := isolation.PrepareCitus(ctx, conn); err != nil {
			return err
		}
	}
	if err := isolation.BecomeOwner(ctx, conn); err != nil {
		return err
	}
	var conflict *store.ConflictError // a concurrent migrator created it
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+migrations.ControlSchema); err != nil && !errors.As(store.Translate(err), &conflict) {
		return fmt.Errorf("create control schema: %w", err)
	}
	db := isolation.OwnerDB(s.owner.Config().ConnConfig, "")
	defer db.Close()
	p, err := migrations.Control.Provider(db, isolation.LockID(conn.Config().Database, migrations.ControlSchema))
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate control plane: %w", err)
	}
	if _, err := conn.Exec(ctx, `GRANT SELECT ON `+migrations.Control.Table+` TO `+pgx.Identifier{isolation.AppRole}.Sanitize()); err != nil {
		return fmt.Errorf("grant control version: %w", err)
	}
	return nil
}

// migrateTenants migrates every tenant not known to be at head.
func (s *Service) migrateTenants(ctx context.Context, progress Progress) error {
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return err
	}
	head := migrations.Tenant.Head()
	var todo []Tenant
	for _, t := range tenants {
		if (t.Version != head || t.MigrateError != "") && t.Status != StatusDeleting && t.Status != StatusProvisioning {
			todo = append(todo, t)
		}
	}
	var done, failed atomic.Int64
	var mu sync.Mutex
	last := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Isolation.MigrateParallelism)
	for _, t := range todo {
		g.Go(func() error {
			v, merr := s.migrateTenant(gctx, t.Isolated())
			msg := ""
			if merr != nil {
				failed.Add(1)
				msg = merr.Error()
				s.log.Error("tenant migration failed", "tenant", t.Slug, "tenant_id", t.ID, "version", v, "err", merr)
			}
			if _, err := s.owner.Exec(gctx, `
				UPDATE bulkhead.tenants SET version = $2, migrate_error = $3, migrated_at = now(), updated_at = now()
				WHERE id = $1`, t.ID, v, msg); err != nil {
				return fmt.Errorf("record migration of %s: %w", t.Slug, err)
			}
			n := done.Add(1)
			mu.Lock()
			defer mu.Unlock()
			if progress != nil && (n == int64(len(todo)) || time.Since(last) > time.Second) {
				last = time.Now()
				progress(int(n), len(todo), int(failed.Load()))
			}
			return nil
		})
	}
	return g.Wait()
}

// migrateTenant migrates t on its strategy.
func (s *Service) migrateTenant(ctx context.Context, t isolation.Tenant) (int64, error) {
	st, err := s.strategies.For(t)
	if err != nil {
		return 0, err
	}
	return st.Migrate(ctx, t)
}

// MigrateStatus reports the control plane's version and each tenant's.
func (s *Service) MigrateStatus(ctx context.Context) (MigrationReport, error) {
	r := MigrationReport{ControlHead: migrations.Control.Head(), TenantHead: migrations.Tenant.Head()}
	db, err := s.reader()
	if err != nil {
		return r, err
	}
	if r.ControlVersion, err = controlVersion(ctx, db); err != nil {
		return r, err
	}
	if r.ControlVersion == 0 {
		return r, nil
	}
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return r, err
	}
	r.Tenants = make([]TenantMigration, 0, len(tenants))
	for _, t := range tenants {
		m := TenantMigration{Tenant: t.Slug, Version: t.Version, Head: r.TenantHead, State: "current", Error: t.MigrateError}
		switch {
		case t.MigrateError != "":
			m.State = "failed"
			r.Failed++
		case t.Version != r.TenantHead:
			m.State = "behind"
		}
		r.Tenants = append(r.Tenants, m)
	}
	return r, nil
}

// Ready reports whether the control plane is at head and every strategy
// in use (the default, and those of existing tenants) can serve; Degraded names parts that cannot, while the whole still can. An
// *isolation.NotReadyError says why in words anyone may read; any other
// error is the database's own.
func (s *Service) Ready(ctx context.Context) (isolation.Degraded, error) {
	if s.app == nil {
		return nil, &isolation.NotReadyError{Reason: "database.url is not set"}
	}
	v, err := controlVersion(ctx, s.app)
	if err != nil {
		return nil, err
	}
	if head := migrations.Control.Head(); v != head {
		return nil, &isolation.NotReadyError{Reason: fmt.Sprintf("control plane is at version %d, head is %d: run bulkhead migrate", v, head)}
	}
	inUse, err := s.inUse(ctx, s.app)
	if err != nil {
		return nil, err
	}
	return s.strategies.Ready(ctx, inUse)
}

func controlVersion(ctx context.Context, q isolation.Querier) (int64, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, migrations.Control.Table).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read control plane version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	err := q.QueryRow(ctx, `SELECT COALESCE(max(version_id), 0) FROM `+migrations.Control.Table+` WHERE is_applied`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read control plane version: %w", err)
	}
	return v, nil
}
