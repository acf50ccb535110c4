package isolation

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/migrations"
)

// Finding codes. They are stable: scripts and tests match on them, and
// docs/VERIFY.md lists each with the flaw that triggers it.
const (
	// CodeRoleSuperuser: the serving role is a superuser.
	CodeRoleSuperuser = "role-superuser"
	// CodeRoleBypassRLS: the serving role has BYPASSRLS.
	CodeRoleBypassRLS = "role-bypassrls"
	// CodeRoleMemberOfBypasser: the serving role is a member of (may SET
	// ROLE to) a superuser or BYPASSRLS role, such as bulkhead_system.
	CodeRoleMemberOfBypasser = "role-member-of-bypasser"
	// CodeRoleOwnsTenantTable: the serving role owns a tenant table.
	CodeRoleOwnsTenantTable = "role-owns-tenant-table"
	// CodeRoleMemberOfOwner: the serving role is a member of a role owning
	// a tenant table.
	CodeRoleMemberOfOwner = "role-member-of-owner"
	// CodeTableRLSDisabled: a tenant table (or partition) without RLS.
	CodeTableRLSDisabled = "table-rls-disabled"
	// CodeTableRLSNotForced: a tenant table (or partition) whose RLS is not
	// forced, so its owner bypasses it.
	CodeTableRLSNotForced = "table-rls-not-forced"
	// CodeTableNoTenantPolicy: a tenant table (or partition) without a
	// permissive policy on the tenant setting.
	CodeTableNoTenantPolicy = "table-no-tenant-policy"
	// CodeTableLoosePolicy: a permissive policy ignoring the tenant
	// setting, OR'ed with the tenant policy.
	CodeTableLoosePolicy = "table-loose-policy"
	// CodeTableDangerousGrant: TRUNCATE, REFERENCES or TRIGGER (which ALL
	// includes) on a tenant table, or REFERENCES on one of its columns, for
	// the serving role, PUBLIC or a role the serving role may act as. None
	// of them is subject to RLS.
	CodeTableDangerousGrant = "table-dangerous-grant"
	// CodeDefaultDangerousGrant: default privileges that will give the
	// serving role or PUBLIC TRUNCATE, REFERENCES or TRIGGER on tables
	// created later.
	CodeDefaultDangerousGrant = "default-dangerous-grant"
	// CodeViewNotSecurityInvoker: a view the serving role can read reaches
	// a tenant table and runs as its owner (no security_invoker).
	CodeViewNotSecurityInvoker = "view-not-security-invoker"
	// CodeMatviewOverTenantTable: a materialized view the serving role can
	// read holds tenant rows; materialized views have no RLS.
	CodeMatviewOverTenantTable = "matview-over-tenant-table"
	// CodeFunctionImmutableSetting: a function reading the tenant setting
	// is IMMUTABLE, so a cached plan may serve one tenant's value to another.
	CodeFunctionImmutableSetting = "function-immutable-setting"
	// CodeFunctionDefinerBypasses: a SECURITY DEFINER function the serving
	// role may execute runs as a role that bypasses RLS.
	CodeFunctionDefinerBypasses = "function-definer-bypasses"
	// CodeControlWriteGrant: the serving role may write to, or create in,
	// the control plane (schema bulkhead), which it must only read.
	CodeControlWriteGrant = "control-write-grant"
	// CodePostgresOutdated: a PostgreSQL minor release without the fixes
	// of the known RLS vulnerabilities.
	CodePostgresOutdated = "postgres-outdated"
	// CodePostgresUnsupported: PostgreSQL older than 15.
	CodePostgresUnsupported = "postgres-unsupported"
)

// memberOrPublic is a SQL condition on an aclexplode grantee (column
// a.grantee): PUBLIC, or a role the current user may act as — itself, a
// role it inherits, or one it may SET ROLE to (NOINHERIT does not stop
// that). CASE keeps pg_has_role from seeing PUBLIC's OID 0.
const memberOrPublic = `CASE WHEN a.grantee = 0 THEN true ELSE pg_has_role(current_user, a.grantee, 'MEMBER') END`

// CheckDatabase runs the checks of the database q is connected to, as the
// serving role, that hold whatever the strategy: tenant tables the serving
// role can reach (in any schema), dangerous grants, views, functions, the
// control plane and the server version. Strategies serving from several
// databases call it on each. It only reads the catalogs.
func CheckDatabase(ctx context.Context, q Querier) ([]Finding, error) {
	var out []Finding
	for _, check := range []struct {
		name string
		fn   func(context.Context, Querier) ([]Finding, error)
	}{
		{"reachable tenant tables", checkReachableTenantTables},
		{"grants", CheckGrants},
		{"views", CheckViews},
		{"functions", CheckFunctions},
		{"control plane", CheckControlPlane},
		{"server version", CheckServer},
	} {
		f, err := check.fn(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", check.name, err)
		}
		out = append(out, f...)
	}
	return out, nil
}

// VerifyAll is what `bulkhead verify` reports and what serve checks at
// start: CheckServingRole and CheckDatabase on q (a connection or pool of
// the serving role), and the strategy's own Verify (a Router verifies every
// strategy it runs). Findings are de-duplicated and sorted, critical
// first. It only reads the catalogs and is safe to run while the server
// serves.
func VerifyAll(ctx context.Context, q Querier, strategy Strategy) ([]Finding, error) {
	role, err := CheckServingRole(ctx, q)
	if err != nil {
		return nil, err
	}
	db, err := CheckDatabase(ctx, q)
	if err != nil {
		return nil, err
	}
	st, err := strategy.Verify(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify %s strategy: %w", strategy.Name(), err)
	}
	return Dedupe(slices.Concat(role, db, st)), nil
}

// Dedupe drops repeated findings (same code, object and detail: the same
// table checked by a strategy and by CheckDatabase) and sorts the rest:
// critical first, then by code and object.
func Dedupe(fs []Finding) []Finding {
	out := make([]Finding, 0, len(fs))
	seen := map[[3]string]bool{}
	for _, f := range fs {
		k := [3]string{f.Code, f.Object, f.Detail}
		if !seen[k] {
			seen[k] = true
			out = append(out, f)
		}
	}
	rank := func(s string) int {
		if s == Critical {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(rank(a.Severity), rank(b.Severity)), cmp.Compare(a.Code, b.Code), cmp.Compare(a.Object, b.Object))
	})
	return out
}

// checkReachableTenantTables runs the tenant-table checks on every tenant
// table, in any schema but the control plane's, that the serving role can
// reach directly (any privilege, and USAGE on its schema): strategies
// check the schemas they own, this catches a tenant table created anywhere
// else.
func checkReachableTenantTables(ctx context.Context, q Querier) ([]Finding, error) {
	return checkTenantTables(ctx, q, "%", true)
}

// CheckGrants reports TRUNCATE, REFERENCES and TRIGGER on tenant tables,
// and REFERENCES on their columns, held by the serving role (q's user),
// PUBLIC, or a role the serving role may act as; and default privileges
// that would grant them on future tables. ALL includes all three. None is
// subject to Row-Level Security: TRUNCATE empties every tenant's rows,
// REFERENCES lets a foreign key probe for another tenant's keys, TRIGGER
// runs code on every tenant's writes. Table grants are critical; default
// privileges a warning (they harm only tables created later).
func CheckGrants(ctx context.Context, q Querier) ([]Finding, error) {
	rows, err := q.Query(ctx, `
		SELECT t.nspname, t.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM (`+tenantTables+`) t
		JOIN pg_class c ON c.oid = t.oid
		CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
		  AND a.grantee <> c.relowner AND `+memberOrPublic+`
		GROUP BY 1, 2, 3
		UNION ALL
		SELECT t.nspname, t.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
		       'REFERENCES (' || string_agg(DISTINCT quote_ident(at.attname), ', ') || ')'
		FROM (`+tenantTables+`) t
		JOIN pg_attribute at ON at.attrelid = t.oid AND at.attacl IS NOT NULL AND NOT at.attisdropped
		CROSS JOIN LATERAL aclexplode(at.attacl) a
		WHERE a.privilege_type = 'REFERENCES' AND a.grantee <> t.relowner AND `+memberOrPublic+`
		GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3, 4`)
	if err != nil {
		return nil, fmt.Errorf("read tenant table grants: %w", err)
	}
	var out []Finding
	var schema, table, grantee, privs string
	_, err = pgx.ForEachRow(rows, []any{&schema, &table, &grantee, &privs}, func() error {
		name := pgx.Identifier{schema, table}.Sanitize()
		to := grantee
		if to != "PUBLIC" {
			to = pgx.Identifier{grantee}.Sanitize()
		}
		revoke := privs
		if strings.HasPrefix(privs, "REFERENCES (") {
			revoke = "REFERENCES" + strings.TrimPrefix(privs, "REFERENCES")
		}
		out = append(out, Finding{CodeTableDangerousGrant, Critical, "table " + name,
			grantee + " holds " + privs + " on a tenant table; these are not subject to Row-Level Security",
			"REVOKE " + revoke + " ON " + name + " FROM " + to})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read tenant table grants: %w", err)
	}

	rows, err = q.Query(ctx, `
		SELECT pg_get_userbyid(d.defaclrole), COALESCE(n.nspname, ''),
		       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM pg_default_acl d
		LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
		CROSS JOIN LATERAL aclexplode(d.defaclacl) a
		WHERE d.defaclobjtype = 'r' AND a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
		  AND a.grantee <> d.defaclrole AND `+memberOrPublic+`
		GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("read default privileges: %w", err)
	}
	var creator, nsp string
	_, err = pgx.ForEachRow(rows, []any{&creator, &nsp, &grantee, &privs}, func() error {
		to := grantee
		if to != "PUBLIC" {
			to = pgx.Identifier{grantee}.Sanitize()
		}
		in, obj := "", "default privileges of "+creator
		if nsp != "" {
			in, obj = " IN SCHEMA "+pgx.Identifier{nsp}.Sanitize(), obj+" in schema "+nsp
		}
		out = append(out, Finding{CodeDefaultDangerousGrant, Warning, obj,
			"tables " + creator + " creates will grant " + privs + " to " + grantee,
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + pgx.Identifier{creator}.Sanitize() + in + " REVOKE " + privs + " ON TABLES FROM " + to})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read default privileges: %w", err)
	}
	return out, nil
}

// CheckViews reports views and materialized views that the serving role
// can read and that reach a tenant table, directly or through other views.
// A view without security_invoker reads its tables as its owner: critical
// when the owner bypasses RLS there (superuser, BYPASSRLS, or owner of a
// reached table whose RLS is not forced), a warning otherwise (the policies
// still bind the owner, and still read the caller's tenant setting, but one
// NO FORCE away from a leak). A readable materialized view is always
// critical: it has no RLS and holds every tenant's rows.
func CheckViews(ctx context.Context, q Querier) ([]Finding, error) {
	rows, err := q.Query(ctx, `
		WITH RECURSIVE tt AS (`+tenantTables+`),
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
		)
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
		  AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(v.oid, 'SELECT')
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
			out = append(out, Finding{CodeMatviewOverTenantTable, Critical, "materialized view " + name,
				"the serving role can read a materialized view over tenant tables (" + tables + "); it has no Row-Level Security",
				"REVOKE SELECT ON " + name + " FROM PUBLIC, " + pgx.Identifier{AppRole}.Sanitize() + ", or drop it"})
		case !invoker:
			sev, why := Warning, "the policies still bind its owner "+owner
			if bypasses {
				sev, why = Critical, "its owner "+owner+" bypasses Row-Level Security there"
			}
			out = append(out, Finding{CodeViewNotSecurityInvoker, sev, "view " + name,
				"the view reads tenant tables (" + tables + ") as its owner, not as the caller; " + why,
				"ALTER VIEW " + name + " SET (security_invoker = true)"})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read views over tenant tables: %w", err)
	}
	return out, nil
}

// CheckFunctions reports functions, outside the system schemas, that read
// the tenant setting and are IMMUTABLE (critical: the planner may fold the
// call into a cached plan, serving one tenant's value to the next), and
// SECURITY DEFINER functions the serving role may execute whose owner
// bypasses Row-Level Security: a superuser, a BYPASSRLS role, or the owner
// (or a member of it) of a tenant table whose RLS is not forced (critical).
// Owning tenant tables alone is not a bypass: forced RLS binds the owner.
func CheckFunctions(ctx context.Context, q Querier) ([]Finding, error) {
	rows, err := q.Query(ctx, `
		SELECT p.oid::regprocedure::text
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE p.provolatile = 'i' AND p.prokind IN ('f', 'p')
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND (p.prosrc || COALESCE(pg_get_function_sqlbody(p.oid), '')) LIKE '%' || $1 || '%'
		ORDER BY 1`, Setting)
	if err != nil {
		return nil, fmt.Errorf("read functions: %w", err)
	}
	var out []Finding
	var fn string
	_, err = pgx.ForEachRow(rows, []any{&fn}, func() error {
		out = append(out, Finding{CodeFunctionImmutableSetting, Critical, "function " + fn,
			"the function reads " + Setting + " and is IMMUTABLE: a cached plan can serve one tenant's value to another",
			"ALTER FUNCTION " + fn + " STABLE"})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read functions: %w", err)
	}

	rows, err = q.Query(ctx, `
		SELECT p.oid::regprocedure::text, o.rolname, o.rolsuper, o.rolbypassrls,
		       ARRAY(SELECT t.oid::regclass::text FROM (`+tenantTables+`) t JOIN pg_class c ON c.oid = t.oid
		             WHERE NOT c.relforcerowsecurity AND pg_has_role(p.proowner, t.relowner, 'USAGE') ORDER BY 1)
		FROM pg_proc p
		JOIN pg_namespace n ON n.oid = p.pronamespace
		JOIN pg_roles o ON o.oid = p.proowner
		WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("read security definer functions: %w", err)
	}
	var (
		owner         string
		super, bypass bool
		unforced      []string
	)
	_, err = pgx.ForEachRow(rows, []any{&fn, &owner, &super, &bypass, &unforced}, func() error {
		var why string
		switch {
		case super:
			why = "a superuser"
		case bypass:
			why = "BYPASSRLS"
		case len(unforced) > 0:
			why = "the owner of tenant tables whose RLS is not forced (" + strings.Join(unforced, ", ") + ")"
		default:
			return nil
		}
		out = append(out, Finding{CodeFunctionDefinerBypasses, Critical, "function " + fn,
			"the serving role may execute this SECURITY DEFINER function, which runs as " + owner + ", " + why + ", so it bypasses Row-Level Security",
			"REVOKE EXECUTE ON FUNCTION " + fn + " FROM PUBLIC, " + pgx.Identifier{AppRole}.Sanitize() + ", or ALTER FUNCTION " + fn + " SECURITY INVOKER"})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read security definer functions: %w", err)
	}
	return out, nil
}

// CheckControlPlane reports every way the serving role may change the
// control plane (schema bulkhead), which it reads to authenticate before a
// tenant is bound and which its RLS therefore does not cover: a privilege
// other than SELECT on one of its tables, views or sequences (held
// directly, through PUBLIC, or through a role it may act as), ownership of
// one, or CREATE or ownership of the schema. All are critical: a serving
// role that writes api_keys can mint a key for any tenant. The one write
// allowed is the serving role's own UPDATE of api_keys.last_used_at, a
// column-level privilege that lets authentication record a key's use and
// can change nothing that decides who a key is or whether it works.
func CheckControlPlane(ctx context.Context, q Querier) ([]Finding, error) {
	// kind: table, column (privileges on some of a table's columns),
	// owner (of a table), schema (CREATE), schema-owner.
	rows, err := q.Query(ctx, `
		SELECT 'table', c.relname, CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
		  AND a.privilege_type <> 'SELECT' AND a.grantee <> c.relowner AND `+memberOrPublic+`
		GROUP BY c.relname, a.grantee
		UNION ALL
		SELECT 'column', c.relname, CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END,
		       string_agg(DISTINCT a.privilege_type || ' (' || quote_ident(at.attname) || ')', ', ')
		FROM pg_class c
		JOIN pg_attribute at ON at.attrelid = c.oid AND at.attacl IS NOT NULL AND NOT at.attisdropped
		CROSS JOIN LATERAL aclexplode(at.attacl) a
		WHERE c.relnamespace = $1::regnamespace AND a.privilege_type <> 'SELECT' AND a.grantee <> c.relowner AND `+memberOrPublic+`
		  AND NOT (c.relname = 'api_keys' AND at.attname = 'last_used_at' AND a.privilege_type = 'UPDATE'
		           AND a.grantee = to_regrole($2))
		GROUP BY c.relname, a.grantee
		UNION ALL
		SELECT 'owner', c.relname, pg_get_userbyid(c.relowner), 'ownership'
		FROM pg_class c
		WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
		  AND pg_has_role(current_user, c.relowner, 'MEMBER')
		UNION ALL
		SELECT 'schema', '', CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END, 'CREATE'
		FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
		WHERE n.oid = $1::regnamespace AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner AND `+memberOrPublic+`
		UNION ALL
		SELECT 'schema-owner', '', pg_get_userbyid(n.nspowner), 'ownership'
		FROM pg_namespace n
		WHERE n.oid = $1::regnamespace AND pg_has_role(current_user, n.nspowner, 'MEMBER')
		ORDER BY 1, 2, 3`, migrations.ControlSchema, AppRole)
	if err != nil {
		return nil, fmt.Errorf("read control plane privileges: %w", err)
	}
	var out []Finding
	var kind, rel, holder, privs string
	schema := pgx.Identifier{migrations.ControlSchema}.Sanitize()
	owner := pgx.Identifier{OwnerRole}.Sanitize()
	_, err = pgx.ForEachRow(rows, []any{&kind, &rel, &holder, &privs}, func() error {
		from := "PUBLIC"
		if holder == "" {
			holder = "PUBLIC"
		} else {
			from = pgx.Identifier{holder}.Sanitize()
		}
		table := pgx.Identifier{migrations.ControlSchema, rel}.Sanitize()
		obj, fix := "table "+table, ""
		switch kind {
		case "table", "column":
			fix = "REVOKE " + privs + " ON " + table + " FROM " + from
		case "owner":
			fix = "ALTER TABLE " + table + " OWNER TO " + owner
		case "schema":
			obj, fix = "schema "+schema, "REVOKE CREATE ON SCHEMA "+schema+" FROM "+from
		case "schema-owner":
			obj, fix = "schema "+schema, "ALTER SCHEMA "+schema+" OWNER TO "+owner
		}
		out = append(out, Finding{CodeControlWriteGrant, Critical, obj,
			holder + " holds " + privs + " on the control plane, which the serving role may only read", fix})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read control plane privileges: %w", err)
	}
	return out, nil
}

// fixedIn maps a PostgreSQL major version to the first minor release with
// the fixes of the known RLS vulnerabilities (CVE-2024-10976: policies
// under subqueries ignoring role changes; CVE-2025-8713: optimizer
// statistics leaking rows that policies hide). Majors after 17 shipped
// with them.
var fixedIn = map[int]int{15: 14, 16: 10, 17: 6}

// CheckServer reports a PostgreSQL server older than 15 or below the minor
// release that fixed the known RLS vulnerabilities. Both are warnings: the
// fix is an upgrade the operator schedules, not a reason to stop serving.
func CheckServer(ctx context.Context, q Querier) ([]Finding, error) {
	var num string
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')`).Scan(&num); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return nil, fmt.Errorf("read server version: %q is not a number", num)
	}
	return VersionFindings(n), nil
}

// VersionFindings returns the findings for a server whose
// server_version_num is num (150014 for 15.14).
func VersionFindings(num int) []Finding {
	major, minor := num/10000, num%10000
	version := fmt.Sprintf("%d.%d", major, minor)
	if major < 10 { // 9.6.24 is 90624
		version = fmt.Sprintf("%d.%d.%d", num/10000, num/100%100, num%100)
	}
	switch want, known := fixedIn[major]; {
	case major < 15:
		return []Finding{{CodePostgresUnsupported, Warning, "server PostgreSQL " + version,
			"PostgreSQL older than 15 lacks security_invoker views and the fixes of the known RLS vulnerabilities",
			"upgrade to PostgreSQL 15.14, 16.10, 17.6 or later"}}
	case known && minor < want:
		return []Finding{{CodePostgresOutdated, Warning, "server PostgreSQL " + version,
			fmt.Sprintf("PostgreSQL %d before %d.%d has known Row-Level Security vulnerabilities (CVE-2024-10976, CVE-2025-8713)", major, major, want),
			fmt.Sprintf("upgrade to PostgreSQL %d.%d or later", major, want)}}
	}
	return nil
}
