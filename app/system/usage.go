package system

import (
	"context"
	"fmt"
	"maps"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// ActionUsage is the audited action of a usage report.
const ActionUsage = "system.usage"

// TenantUsage is how much one tenant stores.
type TenantUsage struct {
	Tenant    string `json:"tenant"`
	Isolation string `json:"isolation"`
	Rows      int64  `json:"rows"`
	// Bytes is the size of the tenant's rows (pg_column_size of each row),
	// without indexes or free space.
	Bytes  int64                 `json:"bytes"`
	Tables map[string]TableUsage `json:"tables"`
}

// TableUsage is one tenant's share of one table.
type TableUsage = isolation.TableUsage

// Usage reports rows and bytes per tenant. Tenants of a strategy whose
// tenants share tables (isolation.Shared) are counted in one pass per
// table as the system role (which bypasses RLS); tenants with storage of
// their own are counted inside their own binding, through run (the
// Registry behind the move fence, so that a tenant moving meanwhile is
// counted where it is). The whole report is one audited escalation.
func (e *Escalator) Usage(ctx context.Context, reason string, strategies *isolation.Registry, run isolation.Runner) ([]TenantUsage, error) {
	tenants, err := e.control.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	slugs := make([]string, len(tenants))
	out := make([]TenantUsage, len(tenants))
	for i, t := range tenants {
		slugs[i] = t.Slug
		out[i] = TenantUsage{Tenant: t.Slug, Isolation: t.Isolation, Tables: map[string]TableUsage{}}
	}
	shared := map[string]string{} // strategy name → schema of its shared tables
	for _, st := range strategies.All() {
		if sh, ok := st.(isolation.Shared); ok {
			shared[st.Name()] = sh.SharedSchema()
		}
	}
	err = e.Run(ctx, ActionUsage, reason, slugs, func(tx pgx.Tx) error {
		for name, schema := range shared {
			counts, err := isolation.SharedUsage(ctx, tx, schema)
			if err != nil {
				return err
			}
			for i, t := range tenants {
				if t.Isolation == name {
					maps.Copy(out[i].Tables, counts[t.ID])
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, t := range tenants {
		if _, ok := shared[t.Isolation]; ok || t.Status != control.StatusActive && t.Status != control.StatusSuspended {
			continue
		}
		if err := run.Run(ctx, t.Isolated(), func(tx pgx.Tx) error { return ownUsage(ctx, tx, &out[i]) }, isolation.Retryable()); err != nil {
			return nil, fmt.Errorf("usage of %s: %w", t.Slug, err)
		}
	}
	for i := range out {
		for _, u := range out[i].Tables {
			out[i].Rows += u.Rows
			out[i].Bytes += u.Bytes
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out, nil
}

// ownUsage counts a tenant's rows inside its own binding. It assigns what
// it counts, so it may run again (isolation.Retryable).
func ownUsage(ctx context.Context, tx pgx.Tx, u *TenantUsage) error {
	tables, err := isolation.TenantTables(ctx, tx)
	if err != nil {
		return err
	}
	for _, table := range tables {
		var tu TableUsage
		err := tx.QueryRow(ctx, `SELECT count(*), COALESCE(sum(pg_column_size(t.*)), 0)::bigint FROM `+
			pgx.Identifier{table}.Sanitize()+` t`).Scan(&tu.Rows, &tu.Bytes)
		if err != nil {
			return err
		}
		u.Tables[table] = tu
	}
	return nil
}
