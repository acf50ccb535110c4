package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// controlRelations are the relations of the control plane the serving role
// may read: those its migrations create, and their version table.
func controlRelations() []string {
	_, table, _ := strings.Cut(migrations.Control.Table, ".")
	return append(migrations.Control.Relations(migrations.ControlSchema), table)
}

// relkinds words pg_class.relkind.
var relkinds = map[string]string{"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence", "f": "foreign table"}

// Relations reports every relation the serving role may use — itself,
// through PUBLIC, or through a role it may act as, with USAGE on its
// schema — that is none of what the strategies give it: a tenant table
// (checked by TenantTables), a table or view the control plane's
// migrations create (read only: ControlPlane checks writes), a tenant
// migrations' version table (SELECT only, beside tenant tables), a view
// over tenant tables (Views), a security-invoker view (it reads with the
// caller's rights, so what it reaches is checked where it is). A table
// without tenant_id that the serving role can read is where rows copied
// out of tenant tables land, and where other tenants read them; one it can
// write is where it leaves them. Relations of extensions are the
// extension's.
func Relations(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out                    []Finding
		schema, rel, kind, who string
		privs                  string
	)
	err := collect(ctx, q, "relations", `
		WITH RECURSIVE `+viewsOverTenantTables+`,
		acl AS (
			SELECT c.oid, ''::name AS col, a.grantee, a.privilege_type, a.is_grantable
			FROM pg_class c
			CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
			WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
			UNION ALL
			SELECT c.oid, at.attname, a.grantee, a.privilege_type, a.is_grantable
			FROM pg_class c
			JOIN pg_attribute at ON at.attrelid = c.oid AND at.attacl IS NOT NULL AND NOT at.attisdropped
			CROSS JOIN LATERAL aclexplode(at.attacl) a
			WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
		)
		SELECT n.nspname, c.relname, c.relkind::text, `+holder+`,
		       string_agg(DISTINCT a.privilege_type || CASE WHEN a.col <> '' THEN ' (' || quote_ident(a.col) || ')' ELSE '' END, ', ')
		FROM acl a
		JOIN pg_class c ON c.oid = a.oid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
		  AND `+userObject("c")+` AND NOT (n.nspname LIKE 'pg\_%' AND n.nspname <> 'pg_catalog')
		  AND c.oid NOT IN (SELECT oid FROM tt)
		  AND c.oid NOT IN (SELECT view FROM reach)
		  AND NOT (c.relkind = 'v' AND EXISTS (SELECT FROM unnest(c.reloptions) opt WHERE opt ~* '^security_invoker=(true|on|yes|1)$'))
		  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
		  AND `+memberOrPublic+`
		  AND (has_schema_privilege(n.oid, 'USAGE') OR a.grantee <> 0 AND has_schema_privilege(a.grantee, n.oid, 'USAGE'))
		  AND NOT (c.relname = $2 AND a.col = '' AND a.privilege_type = 'SELECT' AND NOT a.is_grantable
		           AND EXISTS (SELECT FROM tt WHERE tt.nspname = n.nspname))
		  -- The control plane: reading what its migrations create is allowed,
		  -- any write is control-write-grant's.
		  AND NOT (n.nspname = $1 AND (a.privilege_type <> 'SELECT' OR c.relname = ANY($3)))
		GROUP BY 1, 2, 3, 4
		ORDER BY 1, 2, 4`, []any{migrations.ControlSchema, migrations.Tenant.Table, controlRelations()},
		[]any{&schema, &rel, &kind, &who, &privs}, func() error {
			name := pgx.Identifier{schema, rel}.Sanitize()
			what := relkinds[kind]
			out = append(out, finding(CodeRelationReachable, critical, what+" "+name,
				who+" holds "+privs+" on a "+what+" that is neither a tenant table nor the control plane: rows copied out of tenant tables can land there, or be read from there",
				"REVOKE ALL ON "+name+" FROM "+grantee(who)+", or drop it"))
			return nil
		})
	return out, err
}

// Schemas reports schemas, but the system ones and the control plane's
// (ControlPlane checks that one), in which the serving role, PUBLIC or a
// role it may act as may create objects: an injected statement could
// leave objects there, for the owner's migrations or another role to run.
func Schemas(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out         []Finding
		schema, who string
	)
	err := collect(ctx, q, "schema privileges", `
		SELECT DISTINCT n.nspname, `+holder+`
		FROM pg_namespace n
		CROSS JOIN LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
		WHERE NOT `+systemSchemas+` AND n.nspname <> $1
		  AND a.privilege_type = 'CREATE' AND `+memberOrPublic+`
		ORDER BY 1, 2`, []any{migrations.ControlSchema}, []any{&schema, &who}, func() error {
		out = append(out, finding(CodeSchemaCreate, critical, "schema "+ident(schema),
			who+" may create objects in schema "+schema+", and the serving role may act as "+who,
			"REVOKE CREATE ON SCHEMA "+ident(schema)+" FROM "+grantee(who)+" (or change the schema's owner)"))
		return nil
	})
	return out, err
}

// DatabasePrivileges reports TEMPORARY (critical) and CREATE (a warning)
// on the current database for the serving role, PUBLIC or a role it may
// act as. A temporary table named like a tenant table shadows it for the
// rest of a pooled session, and behind a transaction-mode pooler for other
// clients: the strategies put pg_temp last on their search_path, and the
// serving role needs no TEMPORARY at all. CREATE lets it make schemas.
func DatabasePrivileges(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out           []Finding
		db, priv, who string
	)
	err := collect(ctx, q, "database privileges", `
		SELECT d.datname, a.privilege_type, `+holder+`
		FROM pg_database d
		CROSS JOIN LATERAL aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a
		WHERE d.datname = current_database() AND a.privilege_type IN ('TEMPORARY', 'CREATE') AND `+memberOrPublic+`
		ORDER BY 2 DESC, 3`, nil, []any{&db, &priv, &who}, func() error {
		revoke := "REVOKE " + priv + " ON DATABASE " + ident(db) + " FROM " + grantee(who)
		if priv == "TEMPORARY" {
			out = append(out, finding(CodeDatabaseTemp, critical, "database "+db,
				who+" may create temporary tables in the database, and the serving role may act as "+who+": a temporary table named like a tenant table shadows it for the rest of a pooled session",
				revoke+" (bulkhead migrate does, as the database owner)"))
			return nil
		}
		out = append(out, finding(CodeDatabaseCreate, warning, "database "+db,
			who+" may create schemas in the database, and the serving role may act as "+who,
			revoke+" (or make another role the database's owner)"))
		return nil
	})
	return out, err
}

// ForeignServers reports foreign servers and foreign-data wrappers the
// serving role, PUBLIC or a role it may act as may use: through one it
// reaches data as whatever user the server's user mapping names.
func ForeignServers(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out             []Finding
		kind, name, who string
	)
	err := collect(ctx, q, "foreign servers", `
		SELECT DISTINCT 'server', s.srvname, `+holder+`
		FROM pg_foreign_server s CROSS JOIN LATERAL aclexplode(COALESCE(s.srvacl, acldefault('S', s.srvowner))) a
		WHERE a.privilege_type = 'USAGE' AND `+memberOrPublic+`
		UNION
		SELECT DISTINCT 'wrapper', w.fdwname, `+holder+`
		FROM pg_foreign_data_wrapper w CROSS JOIN LATERAL aclexplode(COALESCE(w.fdwacl, acldefault('F', w.fdwowner))) a
		WHERE a.privilege_type = 'USAGE' AND `+memberOrPublic+`
		ORDER BY 1, 2, 3`, nil, []any{&kind, &name, &who}, func() error {
		obj, on := "foreign server "+ident(name), "FOREIGN SERVER "+ident(name)
		if kind == "wrapper" {
			obj, on = "foreign-data wrapper "+ident(name), "FOREIGN DATA WRAPPER "+ident(name)
		}
		out = append(out, finding(CodeForeignServer, critical, obj,
			who+" may use "+obj+", and the serving role may act as "+who+": it reaches data as whatever user its mapping names",
			"REVOKE USAGE ON "+on+" FROM "+grantee(who)))
		return nil
	})
	return out, err
}

// SystemObjects reports privileges on PostgreSQL's own functions,
// relations and columns (schema pg_catalog; information_schema's views
// show each role only what it holds privileges on), and on those of
// extensions, that the serving role, PUBLIC or a role it may act as holds
// and that initdb or the extension's script did not give (pg_init_privs
// records what they gave): EXECUTE on pg_read_binary_file reads the data
// files of every tenant, on dblink_connect_u connects as anyone. A
// function left with the default privileges is executable by PUBLIC
// anyway.
func SystemObjects(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out                   []Finding
		kind, name, who, priv string
	)
	err := collect(ctx, q, "privileges on system objects", `
		WITH acl AS (
			SELECT 'function' AS kind, p.oid::regprocedure::text AS name, 'pg_proc'::regclass AS cls, p.oid, 0 AS sub,
			       a.grantee, a.privilege_type
			FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a
			WHERE (p.pronamespace = 'pg_catalog'::regnamespace OR EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')) AND p.proacl IS NOT NULL
			UNION ALL
			SELECT relkind_word, c.oid::regclass::text, 'pg_class'::regclass, c.oid, 0, a.grantee, a.privilege_type
			FROM pg_class c
			CROSS JOIN LATERAL (SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' ELSE 'table' END) AS k (relkind_word)
			CROSS JOIN LATERAL aclexplode(c.relacl) a
			WHERE (c.relnamespace = 'pg_catalog'::regnamespace OR EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e'))
			  AND c.relacl IS NOT NULL
			UNION ALL
			SELECT 'column', c.oid::regclass::text || '.' || quote_ident(at.attname), 'pg_class'::regclass, c.oid, at.attnum,
			       a.grantee, a.privilege_type
			FROM pg_class c
			JOIN pg_attribute at ON at.attrelid = c.oid AND at.attacl IS NOT NULL
			CROSS JOIN LATERAL aclexplode(at.attacl) a
			WHERE c.relnamespace = 'pg_catalog'::regnamespace
			   OR EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
		)
		SELECT a.kind, a.name, `+holder+`, string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM acl a
		LEFT JOIN pg_init_privs ip ON ip.classoid = a.cls AND ip.objoid = a.oid AND ip.objsubid = a.sub
		WHERE `+memberOrPublic+`
		  AND NOT (ip.objoid IS NULL AND a.kind = 'function' AND a.privilege_type = 'EXECUTE')
		  AND NOT EXISTS (SELECT FROM aclexplode(ip.initprivs) i
		                  WHERE i.privilege_type = a.privilege_type AND i.grantee IN (0, a.grantee))
		GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3`, nil, []any{&kind, &name, &who, &priv}, func() error {
		on := name
		switch kind {
		case "function":
			on = "FUNCTION " + name
		case "column":
			dot := strings.LastIndex(name, ".")
			parts := strings.Split(priv, ", ")
			for i := range parts {
				parts[i] += " (" + name[dot+1:] + ")"
			}
			priv, on = strings.Join(parts, ", "), name[:dot]
		}
		out = append(out, finding(CodeSystemObjectGrant, critical, kind+" "+name,
			who+" holds "+priv+" on a "+kind+" of PostgreSQL or of an extension, which neither grants, and the serving role may act as "+who,
			"REVOKE "+priv+" ON "+on+" FROM "+grantee(who)))
		return nil
	})
	return out, err
}

// Settings reports a tenant setting that has a value outside any
// transaction — from ALTER ROLE … SET, ALTER DATABASE … SET, ALTER SYSTEM
// or the DSN's options: a query that no tenant transaction binds would
// see that tenant's rows instead of none. Run on a connection of the pool
// that serves: the setting is read as a new session would read it (a
// pooled session that ran tenant transactions reads back ” once they
// ended).
func Settings(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var value, source string
	err := q.QueryRow(ctx, `
		SELECT COALESCE(current_setting($1, true), ''),
		       COALESCE((SELECT source FROM pg_settings WHERE name = $1), '')`, isolation.Setting).Scan(&value, &source)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", isolation.Setting, err)
	}
	if value == "" {
		return nil, nil
	}
	where := ""
	if source != "" {
		where = " (source: " + source + ")"
	}
	return []Finding{finding(CodeSettingTenantDefault, critical, "setting "+isolation.Setting,
		isolation.Setting+" is "+value+" outside any transaction"+where+": a query no tenant transaction binds reads that tenant's rows",
		"ALTER ROLE "+ident(isolation.AppRole)+" RESET "+isolation.Setting+", and the same for ALTER DATABASE, ALTER SYSTEM and the DSN's options")}, nil
}
