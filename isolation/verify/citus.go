package verify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// OnCitus reports whether the database q is connected to is a Citus
// coordinator: the citus extension is installed and this node holds the
// metadata of the distributed tables. The Citus checks run there only, and
// only there are the LOGIN roles Citus needs accepted.
func OnCitus(ctx context.Context, q isolation.Querier) (bool, error) {
	ok, err := isolation.IsCitus(ctx, q)
	if err != nil || !ok {
		return false, err
	}
	if err := q.QueryRow(ctx, `SELECT citus_is_coordinator()`).Scan(&ok); err != nil {
		return false, fmt.Errorf("ask Citus for the coordinator: %w", err)
	}
	return ok, nil
}

// Citus reports, on a Citus coordinator only, what the tenant binding
// needs of the cluster (docs/DESIGN.md, "Past one machine: Citus"):
//
//   - citus-propagation: isolation.PropagateSetting is not 'local' for
//     the whole database, so a transaction's SET LOCAL of the tenant does
//     not reach the workers for every role: the owner's role-switched
//     deprovisioning then deletes nothing there and reports success;
//   - citus-table-local: a tenant table outside a distributed schema that
//     is not distributed (its rows stay on the coordinator), or not
//     hash-distributed on isolation.DistributionColumn; or a tenant table
//     of a distributed schema outside the schema's shard group (a table a
//     migration created inside a DO block, which Citus leaves local);
//   - citus-table-not-colocated: a tenant table distributed on
//     isolation.DistributionColumn but not co-located with the other
//     tenant tables of its schema, so one tenant's rows of two tables sit
//     on different workers and the composite foreign keys cannot hold.
//
// bulkhead migrate fixes all three where its identity may.
func Citus(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	ok, err := OnCitus(ctx, q)
	if err != nil || !ok {
		return nil, err
	}
	var out []Finding
	var propagated bool
	var db string
	if err := q.QueryRow(ctx, `
		SELECT current_database(), EXISTS (
			SELECT FROM pg_db_role_setting s
			WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0
			  AND $1 || '=local' = ANY (s.setconfig))`, isolation.PropagateSetting).Scan(&db, &propagated); err != nil {
		return nil, fmt.Errorf("read the database's settings: %w", err)
	}
	if !propagated {
		out = append(out, finding(CodeCitusPropagation, critical, "database "+db,
			isolation.PropagateSetting+" is not 'local' for the database: the tenant binding does not reach the workers for every role, and a tenant's deletion there removes nothing yet reports success",
			"ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET "+isolation.PropagateSetting+" = 'local' (then reconnect), or run bulkhead migrate"))
	}

	var (
		table, method, column string
		colocation, anchor    int64
		anchorTable           string
	)
	err = collect(ctx, q, "Citus tenant tables", `
		WITH tt AS (`+isolation.TenantTableQuery+`)
		SELECT t.oid::regclass::text, COALESCE(p.partmethod::text, ''),
		       COALESCE(CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END, ''),
		       COALESCE(p.colocationid, 0),
		       COALESCE(first_value(p.colocationid) OVER w, 0),
		       first_value(t.oid::regclass::text) OVER w
		FROM tt t
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = t.oid
		WHERE NOT EXISTS (SELECT FROM pg_dist_schema s WHERE s.schemaid = (SELECT relnamespace FROM pg_class WHERE oid = t.oid))
		WINDOW w AS (PARTITION BY t.nspname ORDER BY p.partmethod = 'h' AND column_to_column_name(p.logicalrelid, p.partkey) = $1 DESC NULLS LAST, t.relname)
		ORDER BY 1`, []any{isolation.DistributionColumn}, []any{&table, &method, &column, &colocation, &anchor, &anchorTable}, func() error {
		switch {
		case method != "h" || column != isolation.DistributionColumn:
			how := "is not distributed: its rows stay on the coordinator"
			if method != "" {
				how = "is managed by Citus but not hash-distributed on " + isolation.DistributionColumn
			}
			out = append(out, finding(CodeCitusTableLocal, critical, "table "+table,
				"tenant table "+table+" "+how+"; the other tenant tables' foreign keys to it cannot hold on the workers",
				"run bulkhead migrate, which distributes it (SELECT create_distributed_table('"+table+"', '"+isolation.DistributionColumn+"', colocate_with => '"+anchorTable+"'))"))
		case colocation != anchor:
			out = append(out, finding(CodeCitusTableNotColocated, critical, "table "+table,
				"tenant table "+table+" is distributed on "+isolation.DistributionColumn+" but not co-located with "+anchorTable+": one tenant's rows of the two sit on different workers",
				"SELECT update_distributed_table_colocation('"+table+"', colocate_with => '"+anchorTable+"')"))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	var schema string
	err = collect(ctx, q, "Citus tenant tables of distributed schemas", `
		WITH tt AS (`+isolation.TenantTableQuery+`)
		SELECT t.oid::regclass::text, t.nspname
		FROM tt t
		JOIN pg_class c ON c.oid = t.oid
		JOIN pg_dist_schema s ON s.schemaid = c.relnamespace
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = t.oid
		WHERE p.colocationid IS DISTINCT FROM s.colocationid
		ORDER BY 1`, nil, []any{&table, &schema}, func() error {
		out = append(out, finding(CodeCitusTableLocal, critical, "table "+table,
			"tenant table "+table+" is in distributed schema "+schema+" but outside its shard group: its rows stay on the coordinator, or on another worker than the schema's",
			"run bulkhead migrate, which adds it to the schema's shard group"))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
