package isolation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/migrations"
)

// Severity of a Finding. Critical findings make serve refuse to start.
const (
	Critical = "critical"
	Warning  = "warning"
)

// Finding is one way the live database breaks an isolation invariant. The
// codes are the Code constants; docs/VERIFY.md lists each with its flaw.
type Finding struct {
	// Code is stable: scripts and tests match on it.
	Code     string `json:"code"`
	Severity string `json:"severity"`
	// Object names what the finding concerns: a role, table, view, ...
	Object string `json:"object"`
	Detail string `json:"detail"`
	// Fix is one line saying how to mend it.
	Fix string `json:"fix"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s [%s] %s: %s (fix: %s)", f.Code, f.Severity, f.Object, f.Detail, f.Fix)
}

// UnsafeError is returned when the serving role could bypass isolation; the
// server refuses to start on it.
type UnsafeError struct{ Findings []Finding }

func (e *UnsafeError) Error() string {
	parts := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		parts[i] = f.String()
	}
	return "refusing to serve: " + strings.Join(parts, "; ")
}

// CriticalOf returns the critical findings of fs.
func CriticalOf(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == Critical {
			out = append(out, f)
		}
	}
	return out
}

// tenantTables selects every ordinary or partitioned table with a tenant_id
// column outside the system schemas and the control plane.
const tenantTables = `
	SELECT c.oid, n.nspname, c.relname, c.relowner
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p')
	  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bulkhead')
	  AND n.nspname NOT LIKE 'pg\_%'
	  AND EXISTS (SELECT FROM pg_attribute a
	              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)`

// CheckServingRole reports every way the role q is connected as could
// bypass Row-Level Security: superuser, BYPASSRLS, member of a role that
// is either (bulkhead_system, say: one SET ROLE away), owner of a tenant
// table, or member of a role that owns one. All of these are critical.
func CheckServingRole(ctx context.Context, q Querier) ([]Finding, error) {
	var (
		role                string
		super, bypass, inhe bool
	)
	if err := q.QueryRow(ctx,
		`SELECT rolname, rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = current_user`,
	).Scan(&role, &super, &bypass, &inhe); err != nil {
		return nil, fmt.Errorf("read serving role: %w", err)
	}
	ident := pgx.Identifier{role}.Sanitize()
	var out []Finding
	if super {
		out = append(out, Finding{CodeRoleSuperuser, Critical, "role " + role,
			"the serving role is a superuser, which bypasses Row-Level Security",
			"ALTER ROLE " + ident + " NOSUPERUSER, or serve as " + AppRole})
	}
	if bypass {
		out = append(out, Finding{CodeRoleBypassRLS, Critical, "role " + role,
			"the serving role has BYPASSRLS",
			"ALTER ROLE " + ident + " NOBYPASSRLS"})
	}
	bypassers, err := bypassingRoles(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, b := range bypassers {
		out = append(out, Finding{CodeRoleMemberOfBypasser, Critical, "role " + b,
			"the serving role " + role + " may SET ROLE " + b + ", which bypasses Row-Level Security",
			"REVOKE " + pgx.Identifier{b}.Sanitize() + " FROM " + ident})
	}
	rows, err := q.Query(ctx, `
		SELECT t.nspname, t.relname, o.rolname, t.relowner = r.oid
		FROM (`+tenantTables+`) t
		JOIN pg_roles o ON o.oid = t.relowner
		JOIN pg_roles r ON r.rolname = current_user
		WHERE pg_has_role(r.oid, t.relowner, 'MEMBER')
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read tenant table owners: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var schema, table, owner string
		var direct bool
		if err := rows.Scan(&schema, &table, &owner, &direct); err != nil {
			return nil, fmt.Errorf("read tenant table owners: %w", err)
		}
		obj := "table " + pgx.Identifier{schema, table}.Sanitize()
		if direct {
			out = append(out, Finding{CodeRoleOwnsTenantTable, Critical, obj,
				"the serving role " + role + " owns a tenant table; owners can switch RLS off",
				"ALTER TABLE " + pgx.Identifier{schema, table}.Sanitize() + " OWNER TO " + OwnerRole})
		} else {
			out = append(out, Finding{CodeRoleMemberOfOwner, Critical, obj,
				"the serving role " + role + " is a member of " + owner + ", which owns a tenant table",
				"REVOKE " + pgx.Identifier{owner}.Sanitize() + " FROM " + ident})
		}
	}
	return out, rows.Err()
}

// CheckTenantTables reports tenant tables, in the schemas matched by the SQL
// LIKE pattern schemaLike, that lack Row-Level Security, lack forced RLS, or
// lack a policy bound to the tenant setting, and permissive policies that
// ignore the setting (they would be OR'ed in and open the table).
//
// Partitions are tables of their own here, as in PostgreSQL: querying a
// partition directly applies its own policies, not its parent's, so each
// needs RLS and a policy.
func CheckTenantTables(ctx context.Context, q Querier, schemaLike string) ([]Finding, error) {
	return checkTenantTables(ctx, q, schemaLike, false)
}

// checkTenantTables is CheckTenantTables, limited with reachable to the
// tables the current user can reach directly: USAGE on the schema and any
// privilege on the table or one of its columns.
func checkTenantTables(ctx context.Context, q Querier, schemaLike string, reachable bool) ([]Finding, error) {
	rows, err := q.Query(ctx, `
		SELECT t.nspname, t.relname, c.relrowsecurity, c.relforcerowsecurity,
		       EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = t.oid AND p.polpermissive
		               AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_setting(''`+Setting+`''%'),
		       COALESCE((SELECT array_agg(p.polname ORDER BY p.polname) FROM pg_policy p
		                 WHERE p.polrelid = t.oid AND p.polpermissive
		                   AND COALESCE(pg_get_expr(p.polqual, p.polrelid), '') NOT LIKE '%current_setting(''`+Setting+`''%'), '{}'),
		       COALESCE((SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = t.oid AND c.relispartition), '')
		FROM (`+tenantTables+`) t
		JOIN pg_class c ON c.oid = t.oid
		WHERE t.nspname LIKE $1
		  AND (NOT $2 OR has_schema_privilege(c.relnamespace, 'USAGE')
		       AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
		            OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')))
		ORDER BY 1, 2`, schemaLike, reachable)
	if err != nil {
		return nil, fmt.Errorf("read tenant tables: %w", err)
	}
	defer rows.Close()
	var out []Finding
	for rows.Next() {
		var (
			schema, table, parent   string
			enabled, forced, policy bool
			loose                   []string
		)
		if err := rows.Scan(&schema, &table, &enabled, &forced, &policy, &loose, &parent); err != nil {
			return nil, fmt.Errorf("read tenant tables: %w", err)
		}
		name := pgx.Identifier{schema, table}.Sanitize()
		obj := "table " + name
		if parent != "" {
			// Its parent's RLS does not cover a partition read directly.
			obj += " (partition of " + parent + ")"
		}
		if !enabled {
			out = append(out, Finding{CodeTableRLSDisabled, Critical, obj,
				"Row-Level Security is not enabled", "ALTER TABLE " + name + " ENABLE ROW LEVEL SECURITY"})
		}
		if !forced {
			out = append(out, Finding{CodeTableRLSNotForced, Critical, obj,
				"Row-Level Security is not forced, so the table owner bypasses it", "ALTER TABLE " + name + " FORCE ROW LEVEL SECURITY"})
		}
		if !policy {
			out = append(out, Finding{CodeTableNoTenantPolicy, Critical, obj,
				"no permissive policy compares tenant_id with " + Setting,
				"CREATE POLICY tenant_isolation ON " + name + " USING (tenant_id = NULLIF(current_setting('" + Setting + "', true), '')::uuid)"})
		}
		for _, p := range loose {
			out = append(out, Finding{CodeTableLoosePolicy, Critical, obj,
				"permissive policy " + p + " does not use " + Setting + " and is OR'ed with the tenant policy",
				"DROP POLICY " + pgx.Identifier{p}.Sanitize() + " ON " + name + ", or make it RESTRICTIVE"})
		}
	}
	return out, rows.Err()
}

// GrantTenantTables grants the serving DML (and nothing else) on every
// tenant table of schema to grantee, and SELECT on the tenant migrations'
// version table so that readiness can be checked.
func GrantTenantTables(ctx context.Context, q Querier, schema, grantee string) error {
	rows, err := q.Query(ctx, `SELECT t.relname FROM (`+tenantTables+`) t WHERE t.nspname = $1 ORDER BY 1`, schema)
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	to := pgx.Identifier{grantee}.Sanitize()
	for _, t := range tables {
		stmt := "GRANT SELECT, INSERT, UPDATE, DELETE ON " + pgx.Identifier{schema, t}.Sanitize() + " TO " + to
		if _, err := q.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("grant on %s.%s: %w", schema, t, err)
		}
	}
	stmt := "GRANT SELECT ON " + pgx.Identifier{schema, migrations.Tenant.Table}.Sanitize() + " TO " + to
	if _, err := q.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("grant on %s.%s: %w", schema, migrations.Tenant.Table, err)
	}
	return nil
}

func asPgError(err error, target **pgconn.PgError) bool { return errors.As(err, target) }

// DeleteTenantRows deletes every row of tenant from every tenant table of
// schema, within tx (which must be bound to tenant: the policy applies to
// the deletes too). Foreign keys between tenant tables are deferrable, so
// the order does not matter.
func DeleteTenantRows(ctx context.Context, tx pgx.Tx, schema string, tenant uuid.UUID) error {
	rows, err := tx.Query(ctx, `SELECT t.relname FROM (`+tenantTables+`) t WHERE t.nspname = $1 ORDER BY 1`, schema)
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL DEFERRED"); err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{schema, t}.Sanitize()+" WHERE tenant_id = $1", tenant); err != nil {
			return fmt.Errorf("delete rows of %s.%s: %w", schema, t, err)
		}
	}
	return nil
}

// bypassingRoles lists the superuser and BYPASSRLS roles, other than itself,
// that the current role is a member of: roles it can SET ROLE to, or whose
// privileges it already holds. A serving role that reaches one is one
// injected statement away from reading every tenant.
func bypassingRoles(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT rolname FROM pg_roles
		WHERE (rolsuper OR rolbypassrls)
		  AND rolname <> current_user
		  AND pg_has_role(current_user, oid, 'MEMBER')
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("read bypassing roles: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read bypassing roles: %w", err)
	}
	return names, nil
}
