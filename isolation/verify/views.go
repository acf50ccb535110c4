package verify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// viewsOverTenantTables are CTEs: tt, the tenant tables, and reach, each
// view or materialized view (view) with each tenant table it reads
// (tbl), directly or through other views. Use it after WITH RECURSIVE.
const viewsOverTenantTables = `tt AS (` + isolation.TenantTableQuery + `),
		deps AS (
			SELECT DISTINCT r.ev_class AS view, d.refobjid AS ref
			FROM pg_rewrite r
			JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
			 AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
		),
		reach (view, tbl) AS (
			SELECT view, ref FROM deps WHERE ref IN (SELECT oid FROM tt)
			UNION
			SELECT d.view, r.tbl FROM deps d JOIN reach r ON d.ref = r.view
		)`

// Views reports views and materialized views that the serving role can
// read — itself, through PUBLIC, or as a role it may act as (a tenant role
// of the schema strategy, say) — and that reach a tenant table, directly
// or through other views.
// A view without security_invoker reads its tables as its owner: critical
// when the owner bypasses RLS there (superuser, BYPASSRLS, or owner of a
// reached table whose RLS is not forced), a warning otherwise (the policies
// still bind the owner, and still read the caller's tenant setting, but one
// NO FORCE away from a leak). A readable materialized view is always
// critical: it has no RLS and holds every tenant's rows.
func Views(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	rows, err := q.Query(ctx, `
		WITH RECURSIVE `+viewsOverTenantTables+`
		SELECT n.nspname, v.relname, v.relkind = 'm', o.rolname,
		       EXISTS (SELECT FROM unnest(v.reloptions) opt WHERE opt ~* '^security_invoker=(true|on|yes|1)$'),
		       o.rolsuper OR o.rolbypassrls
		         OR bool_or(NOT c.relforcerowsecurity AND pg_has_role(v.relowner, c.relowner, 'USAGE')),
		       string_agg(DISTINCT r.tbl::regclass::text, ', ')
		FROM reach r
		JOIN pg_class v ON v.oid = r.view
		JOIN pg_namespace n ON n.oid = v.relnamespace
		JOIN pg_roles o ON o.oid = v.relowner
		JOIN pg_class c ON c.oid = r.tbl
		WHERE v.relkind IN ('v', 'm')
		  AND EXISTS (SELECT FROM aclexplode(COALESCE(v.relacl, acldefault('r', v.relowner))) a
		              WHERE a.privilege_type = 'SELECT' AND `+memberOrPublic+`
		                AND (has_schema_privilege(n.oid, 'USAGE') OR a.grantee <> 0 AND has_schema_privilege(a.grantee, n.oid, 'USAGE')))
		GROUP BY n.nspname, v.relname, v.relkind, v.reloptions, o.rolname, o.rolsuper, o.rolbypassrls
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read views over tenant tables: %w", err)
	}
	var out []Finding
	var (
		schema, view, owner, tables string
		matview, invoker, bypasses  bool
	)
	_, err = pgx.ForEachRow(rows, []any{&schema, &view, &matview, &owner, &invoker, &bypasses, &tables}, func() error {
		name := pgx.Identifier{schema, view}.Sanitize()
		switch {
		case matview:
			out = append(out, finding(CodeMatviewOverTenantTable, critical, "materialized view "+name,
				"the serving role can read a materialized view over tenant tables ("+tables+"); it has no Row-Level Security",
				"REVOKE SELECT ON "+name+" FROM PUBLIC, "+pgx.Identifier{isolation.AppRole}.Sanitize()+", or drop it"))
		case !invoker:
			sev, why := warning, "the policies still bind its owner "+owner
			if bypasses {
				sev, why = critical, "its owner "+owner+" bypasses Row-Level Security there"
			}
			out = append(out, finding(CodeViewNotSecurityInvoker, sev, "view "+name,
				"the view reads tenant tables ("+tables+") as its owner, not as the caller; "+why,
				"ALTER VIEW "+name+" SET (security_invoker = true)"))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read views over tenant tables: %w", err)
	}
	return out, nil
}
