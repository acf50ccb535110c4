package verify

import (
	"context"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// scope is the CTE tt of the tenant tables a check covers: those in the
// schemas matching the LIKE pattern $1 and, when $2 is true, only those
// the current user can reach directly (USAGE on the schema and any
// privilege on the table or one of its columns). Besides the columns of
// isolation.TenantTableQuery it names each partition's parent.
const scope = `tt AS (
	SELECT t.oid, t.nspname, t.relname, t.relowner,
	       COALESCE((SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = t.oid AND c.relispartition), '') AS parent
	FROM (` + isolation.TenantTableQuery + `) t
	JOIN pg_class c ON c.oid = t.oid
	WHERE t.nspname LIKE $1
	  AND (NOT $2 OR has_schema_privilege(c.relnamespace, 'USAGE')
	       AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
	            OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))))`

// table is one tenant table as the findings name it.
type table struct {
	schema, name, parent string
}

func (t table) ident() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// object is the finding's object: the table, and the partitioned table
// it belongs to (querying a partition directly applies its own policies,
// not its parent's).
func (t table) object() string {
	obj := "table " + t.ident()
	if t.parent != "" {
		obj += " (partition of " + t.parent + ")"
	}
	return obj
}

// TenantTables reports every way the tenant tables in the schemas matched
// by the SQL LIKE pattern schemaLike differ from what the tenant
// migrations create: Row-Level Security enabled and forced; exactly the
// tenant policy; no trigger, rule or publication; no function in their
// expressions or column types that is not built in; every key bound by
// tenant_id; and no grant beyond what the strategies give.
//
// Partitions are tables of their own here, as in PostgreSQL: querying a
// partition directly applies its own policies, not its parent's, so each
// needs RLS and the policy.
func TenantTables(ctx context.Context, q isolation.Querier, schemaLike string) ([]Finding, error) {
	return tenantTables(ctx, q, schemaLike, false)
}

// reachableTenantTables runs the tenant-table checks on every tenant
// table, in any schema but the control plane's, that the serving role can
// reach directly: strategies check the schemas they own, this catches a
// tenant table created anywhere else.
func reachableTenantTables(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	return tenantTables(ctx, q, "%", true)
}

func tenantTables(ctx context.Context, q isolation.Querier, schemaLike string, reachable bool) ([]Finding, error) {
	var out []Finding
	for _, check := range []func(context.Context, isolation.Querier, []any) ([]Finding, error){
		rowSecurity, policies, triggers, rules, publications, userFunctions, keys, tableGrants,
	} {
		f, err := check(ctx, q, []any{schemaLike, reachable})
		if err != nil {
			return nil, err
		}
		out = append(out, f...)
	}
	return out, nil
}

// rowSecurity reports tenant tables without RLS enabled, or not forced.
func rowSecurity(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out             []Finding
		t               table
		enabled, forced bool
	)
	err := collect(ctx, q, "tenant tables", `WITH `+scope+`
		SELECT t.nspname, t.relname, t.parent, c.relrowsecurity, c.relforcerowsecurity
		FROM tt t JOIN pg_class c ON c.oid = t.oid
		ORDER BY 1, 2`, args, []any{&t.schema, &t.name, &t.parent, &enabled, &forced}, func() error {
		if !enabled {
			out = append(out, finding(CodeTableRLSDisabled, critical, t.object(),
				"Row-Level Security is not enabled", "ALTER TABLE "+t.ident()+" ENABLE ROW LEVEL SECURITY"))
		}
		if !forced {
			out = append(out, finding(CodeTableRLSNotForced, critical, t.object(),
				"Row-Level Security is not forced, so the table owner bypasses it", "ALTER TABLE "+t.ident()+" FORCE ROW LEVEL SECURITY"))
		}
		return nil
	})
	return out, err
}

// tenantPredicate is the tenant policy's expression as the migrations write
// it; pg_get_expr deparses it as one of tenantPredicates, whatever the
// spacing, the case of the setting's name (settings are
// case-insensitive) or the side of the comparison it was written on.
const tenantPredicate = `tenant_id = NULLIF(current_setting('` + isolation.Setting + `', true), '')::uuid`

var tenantPredicates = []string{
	`(tenant_id = (NULLIF(current_setting('` + isolation.Setting + `'::text, true), ''::text))::uuid)`,
	`((NULLIF(current_setting('` + isolation.Setting + `'::text, true), ''::text))::uuid = tenant_id)`,
}

// settingName matches the name a deparsed current_setting call reads.
var settingName = regexp.MustCompile(`current_setting\('(?:[^']|'')*'::text`)

// isTenantPredicate reports whether the deparsed expression expr is the
// tenant predicate. The deparsed form is canonical (one spelling per node
// tree) but for the setting's name, which is folded to lower case as
// PostgreSQL folds it. It says nothing of the functions behind the
// operators and casts (a user-defined cast deparses like the built-in
// one): the policy's dependencies say that.
func isTenantPredicate(expr string) bool {
	norm := settingName.ReplaceAllStringFunc(expr, strings.ToLower)
	return slices.Contains(tenantPredicates, norm)
}

// mentionsSetting reports whether a deparsed expression reads the tenant
// setting, whatever the case of its name.
func mentionsSetting(expr string) bool {
	return strings.Contains(strings.ToLower(expr), "current_setting('"+isolation.Setting+"'")
}

// policies reports tenant tables without the tenant policy, exactly as the
// migrations create it — FOR ALL, TO PUBLIC, PERMISSIVE, USING and WITH
// CHECK the tenant predicate (or no WITH CHECK, which means the same),
// calling nothing that is not built in — and every other policy on them.
// A permissive policy is OR'ed with the tenant policy, so it opens the
// table; a restrictive one runs its expression on every tenant's rows
// before the tenant predicate may have filtered them, so an expression
// that raises or calls a function can leak them.
func policies(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	type policy struct {
		table
		name, cmd          string
		permissive, public bool
		roles              []string
		using, check       string
		refs               []string
	}
	var (
		all []policy
		p   policy
	)
	err := collect(ctx, q, "tenant table policies", `WITH `+scope+`
		SELECT t.nspname, t.relname, t.parent, COALESCE(p.polname, ''), COALESCE(p.polcmd::text, ''),
		       COALESCE(p.polpermissive, false), COALESCE(p.polroles = '{0}', false),
		       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1),
		       COALESCE(pg_get_expr(p.polqual, p.polrelid), ''), COALESCE(pg_get_expr(p.polwithcheck, p.polrelid), ''),
		       ARRAY(SELECT DISTINCT pg_describe_object(d.refclassid, d.refobjid, 0) FROM pg_depend d
		             WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
		               AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid) ORDER BY 1)
		FROM tt t LEFT JOIN pg_policy p ON p.polrelid = t.oid
		ORDER BY 1, 2, 4`, args,
		[]any{&p.schema, &p.table.name, &p.parent, &p.name, &p.cmd, &p.permissive, &p.public, &p.roles, &p.using, &p.check, &p.refs},
		func() error {
			q := p
			q.roles, q.refs = slices.Clone(p.roles), slices.Clone(p.refs)
			all = append(all, q)
			return nil
		})
	if err != nil {
		return nil, err
	}
	var out []Finding
	for i := 0; i < len(all); {
		t := all[i].table
		j := i
		for j < len(all) && all[j].table == t {
			j++
		}
		exact := false
		for _, p := range all[i:j] {
			if p.name == "" {
				continue // the table has no policy at all
			}
			var why []string
			if p.cmd != "*" {
				why = append(why, "it applies to "+commands[p.cmd]+" only")
			}
			if !p.permissive {
				why = append(why, "it is RESTRICTIVE, so its expression runs on every tenant's rows")
			}
			if !p.public {
				why = append(why, "it applies TO "+strings.Join(p.roles, ", ")+", not PUBLIC")
			}
			if !isTenantPredicate(p.using) {
				why = append(why, "USING ("+p.using+") is not the tenant predicate")
			}
			if p.check != "" && !isTenantPredicate(p.check) {
				why = append(why, "WITH CHECK ("+p.check+") is not the tenant predicate")
			}
			if len(p.refs) > 0 {
				why = append(why, "it depends on "+strings.Join(p.refs, ", ")+" (the tenant policy depends on its table and what PostgreSQL ships, nothing else)")
			}
			if len(why) == 0 {
				exact = true
				continue
			}
			drop := "DROP POLICY " + ident(p.name) + " ON " + t.ident()
			if p.permissive && !mentionsSetting(p.using) {
				out = append(out, finding(CodeTableLoosePolicy, critical, t.object(),
					"permissive policy "+p.name+" does not use "+isolation.Setting+" and is OR'ed with the tenant policy",
					drop))
				continue
			}
			out = append(out, finding(CodeTablePolicyMismatch, critical, t.object(),
				"policy "+p.name+" is not the tenant policy: "+strings.Join(why, "; "),
				drop+", and keep only the tenant policy: USING and WITH CHECK ("+tenantPredicate+")"))
		}
		if !exact {
			out = append(out, finding(CodeTableNoTenantPolicy, critical, t.object(),
				"no policy is the tenant policy: FOR ALL TO PUBLIC, permissive, USING and WITH CHECK ("+tenantPredicate+")",
				"CREATE POLICY tenant_isolation ON "+t.ident()+" USING ("+tenantPredicate+") WITH CHECK ("+tenantPredicate+")"))
		}
		i = j
	}
	return out, nil
}

// commands words pg_policy.polcmd.
var commands = map[string]string{"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}

// triggers reports triggers on tenant tables, but the internal ones that
// enforce foreign keys: Bulkhead creates none, and a trigger's function
// sees every row written and may copy it anywhere.
func triggers(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out      []Finding
		t        table
		name, fn string
	)
	err := collect(ctx, q, "tenant table triggers", `WITH `+scope+`
		SELECT t.nspname, t.relname, t.parent, tg.tgname, tg.tgfoid::regprocedure::text
		FROM tt t JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal
		ORDER BY 1, 2, 4`, args, []any{&t.schema, &t.name, &t.parent, &name, &fn}, func() error {
		out = append(out, finding(CodeTableTrigger, critical, t.object(),
			"trigger "+name+" runs "+fn+" on the table's rows; Bulkhead creates no trigger, and one can copy every tenant's writes elsewhere",
			"DROP TRIGGER "+ident(name)+" ON "+t.ident()))
		return nil
	})
	return out, err
}

// rules reports rules on tenant tables: a DO ALSO or INSTEAD rule runs its
// actions with the table owner's rights, and may copy the rows written
// anywhere.
func rules(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out  []Finding
		t    table
		name string
	)
	err := collect(ctx, q, "tenant table rules", `WITH `+scope+`
		SELECT t.nspname, t.relname, t.parent, r.rulename
		FROM tt t JOIN pg_rewrite r ON r.ev_class = t.oid
		ORDER BY 1, 2, 4`, args, []any{&t.schema, &t.name, &t.parent, &name}, func() error {
		out = append(out, finding(CodeTableRule, critical, t.object(),
			"rule "+name+" rewrites statements on the table, with its owner's rights; Bulkhead creates no rule",
			"DROP RULE "+ident(name)+" ON "+t.ident()))
		return nil
	})
	return out, err
}

// publications reports tenant tables in a publication (listed, by schema,
// or FOR ALL TABLES): logical replication sends every tenant's rows to the
// subscriber, where no policy of this database applies.
func publications(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out  []Finding
		t    table
		name string
		all  bool
	)
	err := collect(ctx, q, "publications", `WITH `+scope+`
		SELECT DISTINCT t.nspname, t.relname, t.parent, p.pubname, p.puballtables
		FROM pg_publication_tables pt
		JOIN tt t ON t.nspname = pt.schemaname AND t.relname = pt.tablename
		JOIN pg_publication p ON p.pubname = pt.pubname
		ORDER BY 1, 2, 4`, args, []any{&t.schema, &t.name, &t.parent, &name, &all}, func() error {
		fix := "ALTER PUBLICATION " + ident(name) + " DROP TABLE " + t.ident()
		if all {
			fix = "DROP PUBLICATION " + ident(name) + ", and publish only tables without tenant rows"
		}
		out = append(out, finding(CodeTablePublication, critical, t.object(),
			"publication "+name+" replicates the table: every tenant's rows, to wherever it is subscribed",
			fix))
		return nil
	})
	return out, err
}

// userFunctions reports expressions evaluated on tenant tables' rows that
// reach a function, operator or operator class PostgreSQL does not ship:
// column defaults and generated columns, check and other constraints,
// index expressions, predicates and operator classes, and the types of
// the columns (a domain's constraints, a type's input and output
// functions), followed through domains, arrays, ranges and composites.
// Such a function runs as whoever writes, or as its owner when it is
// SECURITY DEFINER, with the row's values in hand. (Policies are checked
// by policies, triggers by triggers.)
func userFunctions(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out       []Finding
		t         table
		what, ref string
	)
	err := collect(ctx, q, "functions of tenant tables", `WITH RECURSIVE `+scope+`,
		objs (rel, classid, objid) AS (
			SELECT t.oid, 'pg_attrdef'::regclass, d.oid FROM tt t JOIN pg_attrdef d ON d.adrelid = t.oid
			UNION ALL
			SELECT t.oid, 'pg_constraint'::regclass, c.oid FROM tt t JOIN pg_constraint c ON c.conrelid = t.oid
			UNION ALL
			SELECT t.oid, 'pg_class'::regclass, i.indexrelid FROM tt t JOIN pg_index i ON i.indrelid = t.oid
		),
		types (rel, col, typ) AS (
			SELECT t.oid, a.attname, a.atttypid
			FROM tt t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
			UNION
			SELECT ty.rel, ty.col, x.sub
			FROM types ty
			JOIN pg_type p ON p.oid = ty.typ
			CROSS JOIN LATERAL (
				SELECT p.typbasetype UNION ALL SELECT p.typelem
				UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = p.oid
				UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = p.typrelid AND a.attnum > 0 AND NOT a.attisdropped
			) AS x (sub)
			WHERE x.sub <> 0
		),
		found (rel, what, ref) AS (
			SELECT o.rel, pg_describe_object(o.classid, o.objid, 0), pg_describe_object(d.refclassid, d.refobjid, 0)
			FROM objs o
			JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid
			WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_opclass'::regclass, 'pg_opfamily'::regclass)
			  AND d.refobjid >= $3
			UNION
			SELECT ty.rel, 'column ' || quote_ident(ty.col) || ' (type ' || format_type(ty.typ, NULL) || ')', 'function ' || f::regprocedure::text
			FROM types ty
			JOIN pg_type p ON p.oid = ty.typ
			CROSS JOIN LATERAL unnest(ARRAY[p.typinput::oid, p.typoutput::oid, p.typreceive::oid, p.typsend::oid,
			                                p.typmodin::oid, p.typmodout::oid, p.typanalyze::oid]) AS f
			WHERE f >= $3
			UNION
			SELECT ty.rel, 'column ' || quote_ident(ty.col) || ' (domain ' || format_type(ty.typ, NULL) || ', constraint ' || quote_ident(c.conname) || ')',
			       pg_describe_object(d.refclassid, d.refobjid, 0)
			FROM types ty
			JOIN pg_constraint c ON c.contypid = ty.typ
			JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = c.oid
			WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass) AND d.refobjid >= $3
		)
		SELECT t.nspname, t.relname, t.parent, f.what, f.ref
		FROM found f JOIN tt t ON t.oid = f.rel
		ORDER BY 1, 2, 4, 5`, append(args, firstUserOID), []any{&t.schema, &t.name, &t.parent, &what, &ref}, func() error {
		out = append(out, finding(CodeTableUserFunction, critical, t.object(),
			what+" uses "+ref+", which PostgreSQL does not ship: it runs on every row written, and may copy it elsewhere",
			"make "+what+" use built-in functions only, or drop it"))
		return nil
	})
	return out, err
}

// keys reports unique indexes of tenant tables without tenant_id among
// their key columns (anywhere: (name, tenant_id) is as tenant-bound as
// (tenant_id, name)), exclusion constraints that do not compare tenant_id
// with =, and foreign keys to a tenant table that do not
// match tenant_id with tenant_id. Constraints are not subject to RLS: the
// first lets one tenant probe for another's values, the second link to
// another's rows.
func keys(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out        []Finding
		t          table
		kind, name string
	)
	err := collect(ctx, q, "tenant table keys", `WITH `+scope+`
		SELECT t.nspname, t.relname, t.parent, 'index', ic.relname
		FROM tt t
		JOIN pg_index i ON i.indrelid = t.oid AND (i.indisunique OR i.indisexclusion)
		JOIN pg_class ic ON ic.oid = i.indexrelid
		LEFT JOIN pg_constraint x ON x.conindid = i.indexrelid AND x.contype = 'x'
		WHERE NOT EXISTS (SELECT FROM generate_series(0, i.indnkeyatts - 1) AS k
		                  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[k]
		                  WHERE a.attname = 'tenant_id'
		                    AND (NOT i.indisexclusion
		                         OR EXISTS (SELECT FROM pg_operator o WHERE o.oid = x.conexclop[k + 1] AND o.oprname = '=')))
		UNION ALL
		SELECT t.nspname, t.relname, t.parent, 'foreign key', c.conname
		FROM tt t
		JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype = 'f'
		WHERE EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		  AND NOT EXISTS (SELECT FROM unnest(c.conkey, c.confkey) AS k (l, r)
		                  JOIN pg_attribute la ON la.attrelid = c.conrelid AND la.attnum = k.l
		                  JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.r
		                  WHERE la.attname = 'tenant_id' AND ra.attname = 'tenant_id')
		ORDER BY 1, 2, 4, 5`, args, []any{&t.schema, &t.name, &t.parent, &kind, &name}, func() error {
		f := Finding{Code: CodeTableKeyWithoutTenant, Severity: critical, Object: t.object()}
		if kind == "index" {
			f.Detail = "unique index " + name + " does not key on tenant_id: a conflict tells one tenant that another holds a value"
			f.Fix = "DROP INDEX " + pgx.Identifier{t.schema, name}.Sanitize() + ", and make the key (tenant_id, …)"
		} else {
			f.Detail = "foreign key " + name + " references a tenant table without matching tenant_id to tenant_id: a row can point at another tenant's"
			f.Fix = "ALTER TABLE " + t.ident() + " DROP CONSTRAINT " + ident(name) + ", and reference (tenant_id, …)"
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// tableGrants reports privileges on tenant tables, and on their columns,
// beyond what the strategies grant: SELECT, INSERT, UPDATE and DELETE to
// the serving role (bulkhead_app, or the role verify runs as), SELECT to
// the system role. Any privilege held by PUBLIC or another role — which
// may set the tenant setting itself — and any grant option is reported;
// TRUNCATE, REFERENCES and TRIGGER of the serving role are Grants'. A
// schema named like a role is the schema strategy's, which checks its
// grants itself.
func tableGrants(ctx context.Context, q isolation.Querier, args []any) ([]Finding, error) {
	var (
		out          []Finding
		t            table
		col, to      string
		privs        string
		grantOptions bool
	)
	err := collect(ctx, q, "tenant table grants", `WITH `+scope+`,
		acl AS (
			SELECT t.oid, ''::name AS col, t.relowner, a.grantee, a.privilege_type, a.is_grantable
			FROM tt t JOIN pg_class c ON c.oid = t.oid CROSS JOIN LATERAL aclexplode(c.relacl) a
			UNION ALL
			SELECT t.oid, at.attname, t.relowner, a.grantee, a.privilege_type, a.is_grantable
			FROM tt t JOIN pg_attribute at ON at.attrelid = t.oid AND at.attacl IS NOT NULL AND NOT at.attisdropped
			CROSS JOIN LATERAL aclexplode(at.attacl) a
		)
		SELECT t.nspname, t.relname, t.parent, a.col, `+holder+`,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type), bool_or(a.is_grantable)
		FROM acl a JOIN tt t ON t.oid = a.oid
		WHERE a.grantee <> a.relowner
		  AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = t.nspname)
		  AND NOT (a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER') AND `+memberOrPublic+`)
		  AND NOT (a.grantee IN (SELECT oid FROM pg_roles WHERE rolname IN (current_user, $3))
		           AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') AND NOT a.is_grantable)
		  AND NOT (a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $4) AND a.privilege_type = 'SELECT' AND NOT a.is_grantable)
		GROUP BY 1, 2, 3, 4, 5
		ORDER BY 1, 2, 4, 5`, append(args, isolation.AppRole, isolation.SystemRole),
		[]any{&t.schema, &t.name, &t.parent, &col, &to, &privs, &grantOptions}, func() error {
			what, revoke := privs, privs
			if col != "" {
				what = privs + " on column " + ident(col)
				parts := strings.Split(privs, ", ")
				for i := range parts {
					parts[i] += " (" + ident(col) + ")"
				}
				revoke = strings.Join(parts, ", ")
			}
			why := "it may set " + isolation.Setting + " to any tenant and read it"
			if grantOptions {
				why = "with GRANT OPTION: it may hand them on"
			}
			out = append(out, finding(CodeTableGrant, critical, t.object(),
				to+" holds "+what+" on a tenant table, which no strategy grants: "+why,
				"REVOKE "+revoke+" ON "+t.ident()+" FROM "+grantee(to)))
			return nil
		})
	return out, err
}
