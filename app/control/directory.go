package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Directory is the control plane as the isolation strategies read it:
// where their tenants are. It implements the interfaces strategy packages
// declare for that (database.Directory), so that no strategy reads the
// control plane's tables itself. It is safe for concurrent use.
type Directory struct {
	pool *pgxpool.Pool
}

// NewDirectory returns the Directory reading with the serving pool, or the
// owner's in a process that has no serving pool.
func NewDirectory(pools *postgres.Pools) *Directory {
	p := pools.App
	if p == nil {
		p = pools.Owner
	}
	return &Directory{pool: p}
}

// CountByServer counts the tenants of strategy per server they are placed
// on.
func (d *Directory) CountByServer(ctx context.Context, strategy string) (map[string]int64, error) {
	if d.pool == nil {
		return nil, errors.New("no control-plane pool")
	}
	rows, err := d.pool.Query(ctx,
		`SELECT server, count(*) FROM bulkhead.tenants WHERE isolation = $1 AND server <> '' GROUP BY server`, strategy)
	if err != nil {
		return nil, err
	}
	count := map[string]int64{}
	var (
		name string
		n    int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error { count[name] = n; return nil }); err != nil {
		return nil, err
	}
	return count, nil
}

// Placed lists the active and suspended tenants of strategy, by server and
// id: those that hold storage. Before the control plane is migrated there
// are none.
func (d *Directory) Placed(ctx context.Context, strategy string) ([]isolation.Tenant, error) {
	if d.pool == nil {
		return nil, errors.New("no control-plane pool")
	}
	var exists bool
	if err := d.pool.QueryRow(ctx, `SELECT to_regclass('bulkhead.tenants') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("list tenants of %s: %w", strategy, err)
	}
	if !exists {
		return nil, nil // nothing migrated, nothing provisioned
	}
	rows, err := d.pool.Query(ctx, `
		SELECT id, slug, isolation, server, placement FROM bulkhead.tenants
		WHERE isolation = $1 AND status IN ('`+StatusActive+`', '`+StatusSuspended+`')
		ORDER BY server, id`, strategy)
	if err != nil {
		return nil, fmt.Errorf("list tenants of %s: %w", strategy, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (isolation.Tenant, error) {
		var t isolation.Tenant
		err := r.Scan(&t.ID, &t.Slug, &t.Strategy, &t.Server, &t.Placement)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants of %s: %w", strategy, err)
	}
	return out, nil
}

// inUse names the strategies the control plane's tenants were provisioned
// with, and the default: those Setup and readiness cover.
func (s *Service) inUse(ctx context.Context, q isolation.Querier) ([]string, error) {
	names := []string{s.strategies.Default().Name()}
	rows, err := q.Query(ctx, `SELECT DISTINCT isolation FROM bulkhead.tenants WHERE isolation <> $1 ORDER BY 1`, names[0])
	if err != nil {
		return nil, fmt.Errorf("list strategies in use: %w", err)
	}
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&name}, func() error { names = append(names, name); return nil }); err != nil {
		return nil, fmt.Errorf("list strategies in use: %w", err)
	}
	return names, nil
}
