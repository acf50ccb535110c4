package schema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// Finding codes of this strategy, beside the tenant-table codes of
// verify.TenantTables. All are critical: each lets someone read a
// tenant schema without being bound to its tenant.
const (
	// CodeAppInherits: the serving role holds a tenant role's privileges
	// without SET ROLE (INHERIT), so it reads the tenant's schema outside a
	// tenant transaction.
	CodeAppInherits = "schema-app-inherits"
	// CodeMemberInherits: another role inherits a tenant role's privileges.
	CodeMemberInherits = "schema-member-inherits"
	// CodeMemberSetsRole: a role other than the serving role may SET ROLE
	// to a tenant role (a NOINHERIT login role granted it, say).
	CodeMemberSetsRole = "schema-member-sets-role"
	// CodeRoleOutside: a tenant role holds rights, ownership, membership or
	// attributes beyond DML on its own schema's tables.
	CodeRoleOutside = "schema-role-outside"
	// CodePublicRights: PUBLIC holds rights on a tenant schema or its tables.
	CodePublicRights = "schema-public-rights"
	// CodeAppRights: the serving role was granted rights on a tenant schema
	// or its tables directly.
	CodeAppRights = "schema-app-rights"
	// CodeForeignRights: a role other than the tenant's, the owner and the
	// system role holds rights on a tenant schema or its tables.
	CodeForeignRights = "schema-foreign-rights"
)

// schemaLike is a LIKE pattern matching every tenant schema.
const schemaLike = `t\_%`

// tenantSchemas selects, as a CTE, every tenant schema of the current
// database with the tenant role of the same name. Roles are global to the
// cluster; scoping them by this database's schemas keeps another
// database's tenants out of this one's findings.
const tenantSchemas = `
	tenant AS (
		SELECT n.oid AS nsp, n.nspname AS name, r.oid AS role
		FROM pg_namespace n JOIN pg_roles r ON r.rolname = n.nspname
		WHERE n.nspname ~ $1
	)`

// Verify reports what breaks isolation between tenant schemas: the
// tenant-table findings of verify.TenantTables for every tenant
// schema, and the codes above. It reads the catalogs only, through the
// serving pool (or the owner's when there is none), and is safe to run
// while the server serves.
func (s *Strategy) Verify(ctx context.Context) ([]isolation.Finding, error) {
	q, err := s.any()
	if err != nil {
		return nil, err
	}
	out, err := verify.TenantTables(ctx, q, schemaLike)
	if err != nil {
		return nil, err
	}
	for _, check := range []func(context.Context, isolation.Querier) ([]isolation.Finding, error){
		checkInherits, checkRoles, checkRights,
	} {
		f, err := check(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, f...)
	}
	return out, nil
}

// checkInherits finds roles that hold a tenant role's privileges without
// SET ROLE, and roles but the serving role that may SET ROLE to one.
// pg_has_role(…, 'USAGE') follows inheritance, whatever makes it (the
// member's INHERIT attribute, or a grant's INHERIT option on PostgreSQL 16
// and later); a member that does not inherit may still SET ROLE, unless
// its grant (16 and later) says SET FALSE — the owner's, which only
// administers the roles it created. Superusers hold everything anyway and
// are verify.ServingRole's concern.
func checkInherits(ctx context.Context, q isolation.Querier) ([]isolation.Finding, error) {
	rows, err := q.Query(ctx, `WITH `+tenantSchemas+`
		SELECT t.name, m.rolname, m.rolname IN ($2, session_user), pg_has_role(m.oid, t.role, 'USAGE'), m.rolcanlogin
		FROM tenant t
		JOIN pg_auth_members am ON am.roleid = t.role
		JOIN pg_roles m ON m.oid = am.member
		WHERE NOT m.rolsuper
		  AND (pg_has_role(m.oid, t.role, 'USAGE')
		       OR m.rolname NOT IN ($2, session_user) AND COALESCE((to_jsonb(am) ->> 'set_option')::bool, true))
		ORDER BY 1, 2`, namePattern, isolation.AppRole)
	if err != nil {
		return nil, fmt.Errorf("read tenant role members: %w", err)
	}
	defer rows.Close()
	var out []isolation.Finding
	for rows.Next() {
		var tenant, member string
		var serving, inherits, login bool
		if err := rows.Scan(&tenant, &member, &serving, &inherits, &login); err != nil {
			return nil, fmt.Errorf("read tenant role members: %w", err)
		}
		m := pgx.Identifier{member}.Sanitize()
		f := isolation.Finding{
			Code: CodeMemberInherits, Severity: isolation.Critical, Object: "role " + member,
			Detail: "role " + member + " inherits the privileges of tenant role " + tenant + " and reads its schema without SET ROLE",
			Fix:    "REVOKE " + pgx.Identifier{tenant}.Sanitize() + " FROM " + m,
		}
		switch {
		case serving:
			f.Code = CodeAppInherits
			f.Detail = "the serving role " + member + " inherits the privileges of tenant role " + tenant + ", so it reads the tenant's schema outside a tenant transaction"
			f.Fix = "ALTER ROLE " + m + " NOINHERIT"
		case !inherits:
			who := "role " + member
			if login {
				who = "login role " + member
			}
			f.Code = CodeMemberSetsRole
			f.Detail = who + " is a member of tenant role " + tenant + ": though it does not inherit its privileges, it may SET ROLE " + tenant + " and read the tenant's schema"
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// checkRoles finds tenant roles with more than DML on their own schema's
// tables and USAGE on the schema: rights on or ownership of anything else
// in this database or of a shared object (pg_shdepend records both),
// membership of any role, and role attributes.
func checkRoles(ctx context.Context, q isolation.Querier) ([]isolation.Finding, error) {
	// On a Citus coordinator a tenant role must be LOGIN: Citus opens the
	// connections that carry its work to the workers as the current role,
	// the tenant's after SET LOCAL ROLE (docs/DESIGN.md). Elsewhere LOGIN
	// is an attribute a tenant role never needs.
	citus, err := verify.OnCitus(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `WITH `+tenantSchemas+`
		SELECT t.name,
		       CASE d.deptype WHEN 'o' THEN 'owns ' ELSE 'holds rights on ' END
		         || pg_describe_object(d.classid, d.objid, d.objsubid),
		       CASE d.deptype WHEN 'o' THEN 'ALTER … OWNER TO ' || quote_ident($2) || ', or DROP it'
		         ELSE 'REVOKE ALL ON ' || pg_describe_object(d.classid, d.objid, d.objsubid) || ' FROM ' || quote_ident(t.name) END
		FROM tenant t
		JOIN pg_shdepend d ON d.refclassid = 'pg_authid'::regclass AND d.refobjid = t.role
		WHERE d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
		  AND d.deptype IN ('a', 'o')
		  AND NOT (d.deptype = 'a' AND (
		        (d.classid = 'pg_namespace'::regclass AND d.objid = t.nsp)
		     OR (d.classid = 'pg_class'::regclass
		         AND EXISTS (SELECT FROM pg_class c WHERE c.oid = d.objid AND c.relnamespace = t.nsp))))
		UNION ALL
		SELECT t.name, 'is a member of role ' || quote_ident(g.rolname),
		       'REVOKE ' || quote_ident(g.rolname) || ' FROM ' || quote_ident(t.name)
		FROM tenant t
		JOIN pg_auth_members am ON am.member = t.role
		JOIN pg_roles g ON g.oid = am.roleid
		UNION ALL
		SELECT t.name, 'has the attribute ' || a.attr,
		       'ALTER ROLE ' || quote_ident(t.name) || ' NO' || a.attr
		FROM tenant t
		JOIN pg_roles r ON r.oid = t.role
		CROSS JOIN LATERAL (VALUES ('LOGIN', r.rolcanlogin AND NOT $3), ('SUPERUSER', r.rolsuper),
		       ('CREATEROLE', r.rolcreaterole), ('CREATEDB', r.rolcreatedb),
		       ('BYPASSRLS', r.rolbypassrls), ('REPLICATION', r.rolreplication)) AS a(attr, has)
		WHERE a.has
		ORDER BY 1, 2`, namePattern, isolation.OwnerRole, citus)
	if err != nil {
		return nil, fmt.Errorf("read tenant role rights: %w", err)
	}
	defer rows.Close()
	var out []isolation.Finding
	for rows.Next() {
		var role, what, fix string
		if err := rows.Scan(&role, &what, &fix); err != nil {
			return nil, fmt.Errorf("read tenant role rights: %w", err)
		}
		out = append(out, isolation.Finding{
			Code: CodeRoleOutside, Severity: isolation.Critical, Object: "role " + role,
			Detail: "tenant role " + role + " " + what + ", beyond its own schema",
			Fix:    fix,
		})
	}
	return out, rows.Err()
}

// checkRights finds grants on a tenant schema, its tables or their columns
// to anyone but the tenant's role, the object's owner, the owner role and
// the system role (whose use is audited). Other tenants' roles holding
// such grants are checkRoles' findings.
func checkRights(ctx context.Context, q isolation.Querier) ([]isolation.Finding, error) {
	rows, err := q.Query(ctx, `WITH `+tenantSchemas+`,
		acl AS (
			SELECT t.role, t.name, ''::name AS rel, ''::name AS col, n.nspowner AS owner, a.grantee, a.privilege_type
			FROM tenant t
			JOIN pg_namespace n ON n.oid = t.nsp
			CROSS JOIN LATERAL aclexplode(n.nspacl) a
			UNION ALL
			SELECT t.role, t.name, c.relname, '', c.relowner, a.grantee, a.privilege_type
			FROM tenant t
			JOIN pg_class c ON c.relnamespace = t.nsp
			CROSS JOIN LATERAL aclexplode(c.relacl) a
			UNION ALL
			SELECT t.role, t.name, c.relname, att.attname, c.relowner, a.grantee, a.privilege_type
			FROM tenant t
			JOIN pg_class c ON c.relnamespace = t.nsp
			JOIN pg_attribute att ON att.attrelid = c.oid AND att.attacl IS NOT NULL
			CROSS JOIN LATERAL aclexplode(att.attacl) a
		)
		SELECT acl.name, acl.rel, acl.col, g.rolname, COALESCE(g.rolname IN ($2, session_user), false),
		       string_agg(DISTINCT acl.privilege_type, ', ' ORDER BY acl.privilege_type)
		FROM acl
		LEFT JOIN pg_roles g ON g.oid = acl.grantee
		WHERE acl.grantee NOT IN (acl.role, acl.owner)
		  AND (acl.grantee = 0 OR (g.rolname NOT IN ($3, $4) AND g.rolname !~ $1))
		GROUP BY acl.name, acl.rel, acl.col, g.rolname
		ORDER BY 1, 2, 3, 4`, namePattern, isolation.AppRole, isolation.OwnerRole, isolation.SystemRole)
	if err != nil {
		return nil, fmt.Errorf("read tenant schema rights: %w", err)
	}
	defer rows.Close()
	var out []isolation.Finding
	for rows.Next() {
		var (
			nsp, rel, col, privs string
			grantee              *string
			serving              bool
		)
		if err := rows.Scan(&nsp, &rel, &col, &grantee, &serving, &privs); err != nil {
			return nil, fmt.Errorf("read tenant schema rights: %w", err)
		}
		obj := "schema " + pgx.Identifier{nsp}.Sanitize()
		if rel != "" {
			obj = "table " + pgx.Identifier{nsp, rel}.Sanitize()
		}
		if col != "" {
			obj = "column " + pgx.Identifier{col}.Sanitize() + " of " + obj
		}
		f := isolation.Finding{Severity: isolation.Critical, Object: obj}
		switch {
		case grantee == nil:
			f.Code = CodePublicRights
			f.Detail = "PUBLIC holds " + privs + " on tenant " + obj
			f.Fix = "REVOKE ALL ON " + obj + " FROM PUBLIC"
		case serving:
			f.Code = CodeAppRights
			f.Detail = "the serving role " + *grantee + " holds " + privs + " on tenant " + obj + " outside any tenant transaction"
			f.Fix = "REVOKE ALL ON " + obj + " FROM " + pgx.Identifier{*grantee}.Sanitize()
		default:
			f.Code = CodeForeignRights
			f.Detail = "role " + *grantee + " holds " + privs + " on tenant " + obj
			f.Fix = "REVOKE ALL ON " + obj + " FROM " + pgx.Identifier{*grantee}.Sanitize()
		}
		out = append(out, f)
	}
	return out, rows.Err()
}
