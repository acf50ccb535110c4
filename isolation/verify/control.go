package verify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// ControlPlane reports every way the serving role may change the
// control plane (schema bulkhead), which it reads to authenticate before a
// tenant is bound and which its RLS therefore does not cover: a privilege
// other than SELECT on one of its tables, views or sequences (held
// directly, through PUBLIC, or through a role it may act as), ownership of
// one, or CREATE or ownership of the schema. All are critical: a serving
// role that writes api_keys can mint a key for any tenant. The one write
// allowed is the serving role's own UPDATE of api_keys.last_used_at, a
// column-level privilege that lets authentication record a key's use and
// can change nothing that decides who a key is or whether it works.
func ControlPlane(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regnamespace($1) IS NOT NULL`, migrations.ControlSchema).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up the control plane: %w", err)
	}
	if !exists {
		return nil, nil // not migrated: nothing to check yet
	}
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
		ORDER BY 1, 2, 3`, migrations.ControlSchema, isolation.AppRole)
	if err != nil {
		return nil, fmt.Errorf("read control plane privileges: %w", err)
	}
	var out []Finding
	var kind, rel, holder, privs string
	schema := pgx.Identifier{migrations.ControlSchema}.Sanitize()
	owner := pgx.Identifier{isolation.OwnerRole}.Sanitize()
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
		out = append(out, finding(CodeControlWriteGrant, critical, obj,
			holder+" holds "+privs+" on the control plane, which the serving role may only read", fix))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read control plane privileges: %w", err)
	}
	return out, nil
}
