package isolation

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/migrations"
)

// TenantTableQuery selects every ordinary or partitioned table with a
// tenant_id column but PostgreSQL's own (made by initdb, below OID 16384),
// temporary and TOAST tables, and the control plane's: the tenant tables,
// wherever they are — a superuser may make one in pg_catalog or
// information_schema too. Its columns are oid, nspname, relname
// and relowner; use it as a subquery.
const TenantTableQuery = `
	SELECT c.oid, n.nspname, c.relname, c.relowner
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p')
	  AND n.nspname <> '` + migrations.ControlSchema + `'
	  AND NOT (n.nspname IN ('pg_catalog', 'information_schema') AND c.oid < 16384)
	  AND (n.nspname NOT LIKE 'pg\_%' OR n.nspname = 'pg_catalog')
	  AND EXISTS (SELECT FROM pg_attribute a
	              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)`

// schemaTenantTablesQuery is TenantTableQuery for one schema ($1), by
// name, sorted. pg_class has no index on the namespace, so filtering
// TenantTableQuery by schema scans every relation of the database: with
// 10,000 tenant schemas (some 200,000 relations) that is a quarter of a
// second, paid by every tenant's provisioning and migration — quadratic
// over a `bulkhead migrate` of all of them. A relation's dependency on its
// namespace (pg_depend, which PostgreSQL keeps for every relation but
// TOAST tables and composite types, and moves with ALTER … SET SCHEMA) is
// indexed by the namespace, so this reads only the schema's own rows.
// TestSchemaTenantTablesMatchTenantTableQuery holds it to TenantTableQuery.
const schemaTenantTablesQuery = `
	SELECT c.relname
	FROM pg_namespace n
	JOIN pg_depend d ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid
	                AND d.classid = 'pg_class'::regclass
	JOIN pg_class c ON c.oid = d.objid AND c.relnamespace = n.oid
	WHERE n.nspname = $1
	  AND c.relkind IN ('r', 'p')
	  AND n.nspname <> '` + migrations.ControlSchema + `'
	  AND NOT (n.nspname IN ('pg_catalog', 'information_schema') AND c.oid < 16384)
	  AND (n.nspname NOT LIKE 'pg\_%' OR n.nspname = 'pg_catalog')
	  AND EXISTS (SELECT FROM pg_attribute a
	              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
	ORDER BY 1`

// tenantTablesOf lists the tenant tables of schema, sorted.
func tenantTablesOf(ctx context.Context, q Querier, schema string) ([]string, error) {
	rows, err := q.Query(ctx, schemaTenantTablesQuery, schema)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	return tables, nil
}

// GrantTenantTables grants the serving DML (and nothing else) on every
// tenant table of schema to grantee, and SELECT on the tenant migrations'
// version table so that readiness can be checked. The grants go in one
// simple-protocol message (an implicit transaction: all or none): two
// round trips in all, with the listing, however many tables there are —
// `bulkhead migrate` makes them for every tenant. The statements also
// (trusted, derived text) go in the same message, after the grants and
// under the same lock.
func GrantTenantTables(ctx context.Context, q Querier, schema, grantee string, also ...string) error {
	tables, err := tenantTablesOf(ctx, q, schema)
	if err != nil {
		return err
	}
	to := pgx.Identifier{grantee}.Sanitize()
	// Two GRANTs on one table at once can fail ("tuple concurrently
	// updated": each rewrites the table's ACL), as when two migrators of
	// one schema finish together — often on Citus, which propagates each
	// to the workers. A transaction lock of the schema's grants
	// serialises them; goose's session lock (LockID) has been released by
	// then, so the two never wait on each other.
	stmts := []string{fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", grantLockID(schema))}
	if len(tables) > 0 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = pgx.Identifier{schema, t}.Sanitize()
		}
		stmts = append(stmts, "GRANT SELECT, INSERT, UPDATE, DELETE ON "+strings.Join(names, ", ")+" TO "+to)
	}
	stmts = append(stmts, "GRANT SELECT ON "+pgx.Identifier{schema, migrations.Tenant.Table}.Sanitize()+" TO "+to)
	stmts = append(stmts, also...)
	if _, err := q.Exec(ctx, strings.Join(stmts, "; ")); err != nil {
		return fmt.Errorf("grant on the tenant tables of %s (%s, %s): %w", schema, strings.Join(tables, ", "), migrations.Tenant.Table, err)
	}
	return nil
}

// grantLockID derives the advisory lock id that serialises the grants on
// schema's tables (advisory locks are per database).
func grantLockID(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("bulkhead grant\x00" + schema))
	return int64(h.Sum64() &^ (1 << 63))
}

func asPgError(err error, target **pgconn.PgError) bool { return errors.As(err, target) }

// DeleteTenantRows deletes every row of tenant from every tenant table of
// schema, within tx (which must be bound to tenant: the policy applies to
// the deletes too), the tables that reference others first, so that no
// foreign key needs deferring (Citus does not carry SET CONSTRAINTS ALL
// DEFERRED to its workers).
func DeleteTenantRows(ctx context.Context, tx pgx.Tx, schema string, tenant uuid.UUID) error {
	tables, err := TenantTablesInDeleteOrder(ctx, tx, schema)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{schema, t}.Sanitize()+" WHERE tenant_id = $1", tenant); err != nil {
			return fmt.Errorf("delete rows of %s.%s: %w", schema, t, err)
		}
	}
	return nil
}
