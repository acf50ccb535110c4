package isolation

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TenantTables lists the tenant tables (those with a tenant_id column) of
// the first schema on q's search_path, sorted: inside Strategy.Run that is
// where the bound tenant's tables are, on every strategy.
func TenantTables(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname FROM pg_class c
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
		  AND NOT c.relispartition
		  AND EXISTS (SELECT FROM pg_attribute a
		              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// TenantTablesInDeleteOrder lists the tenant tables of schema so that a
// table comes before every tenant table it references: deleting a tenant's
// rows in this order never leaves a foreign key pointing at a deleted row,
// so it needs no deferred constraints (which Citus does not carry to its
// workers). Tables in a reference cycle are an error.
func TenantTablesInDeleteOrder(ctx context.Context, q Querier, schema string) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       ARRAY(SELECT DISTINCT r.relname FROM pg_constraint f JOIN pg_class r ON r.oid = f.confrelid
		             WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid
		               AND r.relnamespace = c.relnamespace ORDER BY 1)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND EXISTS (SELECT FROM pg_attribute a
		              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`, schema)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	type table struct {
		name string
		refs []string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		err := r.Scan(&t.name, &t.refs)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	// referencedBy[x] counts the tables not yet listed that reference x.
	referencedBy := map[string]int{}
	for _, t := range tables {
		for _, r := range t.refs {
			referencedBy[r]++
		}
	}
	var order []string
	for len(tables) > 0 {
		rest := tables[:0:0]
		for _, t := range tables {
			if referencedBy[t.name] > 0 {
				rest = append(rest, t)
				continue
			}
			order = append(order, t.name)
			for _, r := range t.refs {
				referencedBy[r]--
			}
		}
		if len(rest) == len(tables) {
			var names []string
			for _, t := range rest {
				names = append(names, t.name)
			}
			return nil, fmt.Errorf("order the tenant tables of %s for deletion: foreign keys form a cycle among %v", schema, names)
		}
		tables = rest
	}
	return order, nil
}
