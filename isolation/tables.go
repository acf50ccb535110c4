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
