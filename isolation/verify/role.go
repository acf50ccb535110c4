package verify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// tenantRolePattern matches the names of the schema strategy's tenant
// roles (schema.Name: t_ and the tenant's 32 hex digits). The serving role
// is a member of each, NOINHERIT, and SETs ROLE to one inside a tenant
// transaction; isolation/schema checks them in the databases that hold
// their schemas (roles are global to the cluster: another database's
// tenants are another deployment's).
const tenantRolePattern = `^t_[0-9a-f]{32}$`

// actingGrant is a SQL condition on a pg_auth_members row am: the member
// may act as the role, by SET ROLE or by inheriting its rights. On
// PostgreSQL 16 and later a grant can carry neither (the CREATEROLE role
// that creates a role is granted it so, with ADMIN only); before 16 every
// grant can. to_jsonb reads the options where they exist, and leaves them
// NULL where they do not.
const actingGrant = `(COALESCE((to_jsonb(am) ->> 'set_option')::bool, true) OR COALESCE((to_jsonb(am) ->> 'inherit_option')::bool, true))`

// ServingRole reports every way the role q is connected as differs from
// the serving role Bulkhead creates — LOGIN NOINHERIT, no other attribute,
// a member of nothing but tenant roles, and no one a member of it but the
// owner role: superuser, BYPASSRLS, CREATEROLE or REPLICATION, membership
// of a role that bypasses RLS or of any other role, and roles that may act
// as it. Roles are global to the cluster, so this is checked once, on the
// control plane's database.
func ServingRole(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		role                                       string
		super, bypass, inherit, createRole, create bool
		replication                                bool
	)
	if err := q.QueryRow(ctx, `
		SELECT rolname, rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb, rolreplication
		FROM pg_roles WHERE rolname = current_user`,
	).Scan(&role, &super, &bypass, &inherit, &createRole, &create, &replication); err != nil {
		return nil, fmt.Errorf("read serving role: %w", err)
	}
	me := ident(role)
	obj := "role " + role
	var out []Finding
	if super {
		// A superuser is a member of every role and bypasses everything:
		// nothing else about it is worth a line.
		return []Finding{finding(CodeRoleSuperuser, critical, obj,
			"the serving role is a superuser, which bypasses Row-Level Security",
			"ALTER ROLE "+me+" NOSUPERUSER, or serve as "+isolation.AppRole)}, nil
	}
	if bypass {
		out = append(out, finding(CodeRoleBypassRLS, critical, obj,
			"the serving role has BYPASSRLS",
			"ALTER ROLE "+me+" NOBYPASSRLS"))
	}
	for _, a := range []struct {
		has      bool
		attr     string
		severity string
		why      string
	}{
		{createRole, "CREATEROLE", critical, "it may create roles and grant itself membership in the owner role"},
		{replication, "REPLICATION", critical, "it may stream the write-ahead log: every tenant's rows"},
		{create, "CREATEDB", warning, "it may create databases, which it never needs"},
		{inherit, "INHERIT", warning, "membership in a tenant role (schema strategy) would grant its rights without SET ROLE"},
	} {
		if a.has {
			out = append(out, finding(CodeRoleAttribute, a.severity, obj,
				"the serving role has "+a.attr+": "+a.why,
				"ALTER ROLE "+me+" NO"+a.attr))
		}
	}

	var (
		name               string
		bypasser, canLogin bool
	)
	// The roles the serving role may act as: those it is granted, and
	// theirs in turn, but not through a tenant role of the schema strategy
	// (isolation/schema checks what those hold, in the database of their
	// schema: roles are shared by every database of the cluster). A
	// tenant role is one named like it that holds rights on a schema in
	// some database, or holds nothing at all, anywhere (one whose database
	// was dropped with its schema); a role merely named like one is
	// followed. Holding nothing, it may still be LOGIN: on Citus tenant
	// roles are (isolation/schema), and logging in is no right the serving
	// role gains by SET ROLE.
	err := collect(ctx, q, "serving role memberships", `
		WITH RECURSIVE tenant AS (
			SELECT r.oid FROM pg_roles r
			WHERE r.rolname ~ $1
			  AND (EXISTS (SELECT FROM pg_shdepend d
			               WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
			                 AND d.classid = 'pg_namespace'::regclass AND d.deptype = 'a')
			       OR NOT EXISTS (SELECT FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid)
			          AND NOT EXISTS (SELECT FROM pg_auth_members am WHERE am.member = r.oid)
			          AND NOT (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication))
		),
		edge AS (
			SELECT am.member, am.roleid FROM pg_auth_members am
			WHERE `+actingGrant+`
		),
		m (role) AS (
			(SELECT e.roleid FROM edge e WHERE e.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)
			 UNION
			 SELECT oid FROM pg_roles WHERE rolname = 'pg_database_owner' AND pg_has_role(current_user, oid, 'MEMBER'))
			UNION
			SELECT e.roleid FROM edge e JOIN m ON e.member = m.role WHERE m.role NOT IN (SELECT oid FROM tenant)
		)
		SELECT r.rolname, r.rolsuper OR r.rolbypassrls, r.rolcanlogin
		FROM m JOIN pg_roles r ON r.oid = m.role
		WHERE r.oid NOT IN (SELECT oid FROM tenant) AND r.rolname <> current_user
		ORDER BY 1`, []any{tenantRolePattern}, []any{&name, &bypasser, &canLogin}, func() error {
		if bypasser {
			out = append(out, finding(CodeRoleMemberOfBypasser, critical, "role "+name,
				"the serving role "+role+" may SET ROLE "+name+", which bypasses Row-Level Security",
				"REVOKE "+ident(name)+" FROM "+me))
			return nil
		}
		out = append(out, finding(CodeRoleMemberExtra, critical, "role "+name,
			"the serving role "+role+" is a member of "+name+" (directly or through another role), which Bulkhead never grants: it holds or may SET ROLE to its rights",
			"REVOKE "+ident(name)+" FROM "+me+" (or from the role that passes it on)"))
		return nil
	})
	if err != nil {
		return nil, err
	}

	err = collect(ctx, q, "members of the serving role", `
		SELECT m.rolname, m.rolcanlogin
		FROM pg_auth_members am
		JOIN pg_roles m ON m.oid = am.member
		WHERE am.roleid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
		  AND m.rolname <> $1
		  AND `+actingGrant+`
		ORDER BY 1`, []any{isolation.OwnerRole}, []any{&name, &canLogin}, func() error {
		how := "a role that is not the owner role"
		if canLogin {
			how = "a login role"
		}
		out = append(out, finding(CodeRoleServingMember, critical, "role "+name,
			name+", "+how+", is a member of the serving role "+role+": it may act as it, set any tenant and read it",
			"REVOKE "+me+" FROM "+ident(name)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// owners reports tenant tables of this database that the serving role
// owns, or whose owner it is a member of: an owner may switch RLS off.
func owners(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out                        []Finding
		schema, table, owner, role string
		direct                     bool
	)
	err := collect(ctx, q, "tenant table owners", `
		SELECT t.nspname, t.relname, o.rolname, r.rolname, t.relowner = r.oid
		FROM (`+isolation.TenantTableQuery+`) t
		JOIN pg_roles o ON o.oid = t.relowner
		JOIN pg_roles r ON r.rolname = current_user
		WHERE NOT r.rolsuper AND pg_has_role(r.oid, t.relowner, 'MEMBER')
		ORDER BY 1, 2`, nil, []any{&schema, &table, &owner, &role, &direct}, func() error {
		name := pgx.Identifier{schema, table}.Sanitize()
		if direct {
			out = append(out, finding(CodeRoleOwnsTenantTable, critical, "table "+name,
				"the serving role "+role+" owns a tenant table; owners can switch RLS off",
				"ALTER TABLE "+name+" OWNER TO "+isolation.OwnerRole))
			return nil
		}
		out = append(out, finding(CodeRoleMemberOfOwner, critical, "table "+name,
			"the serving role "+role+" is a member of "+owner+", which owns a tenant table",
			"REVOKE "+ident(owner)+" FROM "+ident(role)))
		return nil
	})
	return out, err
}
