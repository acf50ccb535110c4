package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// Functions reports functions, outside the system schemas, that read the
// tenant setting (its name in any case) and are IMMUTABLE — the planner
// may fold the call into a cached plan, serving one tenant's value to the
// next — and every SECURITY DEFINER function the serving role may execute
// that runs as another role (but an installed extension's, whose
// privileges SystemObjects compares with what its script gave). Bulkhead
// creates none, and the serving role should be able to run nothing with
// rights it does not hold:
//
//   - function-definer-bypasses: its owner bypasses RLS (a superuser, a
//     BYPASSRLS role, or the owner of a tenant table whose RLS is not
//     forced);
//   - function-definer-owner: its owner owns tenant tables, or inherits
//     from a role that does, and so may ALTER them — switch RLS off, drop
//     the policy — whatever the body says, when the body runs SQL it is
//     given or can be made to;
//   - function-definer: any other, critical when its owner holds
//     privileges on a tenant table (another tenant's role, say), a warning
//     otherwise.
func Functions(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out []Finding
		fn  string
	)
	err := collect(ctx, q, "functions", `
		SELECT p.oid::regprocedure::text
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE p.provolatile = 'i' AND p.prokind IN ('f', 'p')
		  AND `+userObject("p")+`
		  AND lower(p.prosrc || COALESCE(pg_get_function_sqlbody(p.oid), '')) LIKE '%' || $1 || '%'
		ORDER BY 1`, []any{isolation.Setting}, []any{&fn}, func() error {
		out = append(out, finding(CodeFunctionImmutableSetting, critical, "function "+fn,
			"the function reads "+isolation.Setting+" and is IMMUTABLE: a cached plan can serve one tenant's value to another",
			"ALTER FUNCTION "+fn+" STABLE"))
		return nil
	})
	if err != nil {
		return nil, err
	}

	var (
		owner                              string
		super, bypass, mayAlter, holdsRows bool
		unforced                           []string
	)
	err = collect(ctx, q, "security definer functions", `
		WITH tt AS (`+isolation.TenantTableQuery+`)
		SELECT p.oid::regprocedure::text, o.rolname, o.rolsuper, o.rolbypassrls,
		       ARRAY(SELECT t.oid::regclass::text FROM tt t JOIN pg_class c ON c.oid = t.oid
		             WHERE NOT c.relforcerowsecurity AND pg_has_role(p.proowner, t.relowner, 'USAGE') ORDER BY 1),
		       EXISTS (SELECT FROM tt t WHERE pg_has_role(p.proowner, t.relowner, 'USAGE')),
		       EXISTS (SELECT FROM tt t WHERE has_table_privilege(p.proowner, t.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))
		FROM pg_proc p
		JOIN pg_namespace n ON n.oid = p.pronamespace
		JOIN pg_roles o ON o.oid = p.proowner
		WHERE p.prosecdef AND `+userObject("p")+`
		  -- An extension's functions are what its script made them; a
		  -- privilege beyond that is system-object-grant's.
		  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
		  AND o.rolname <> current_user
		  AND has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')
		  -- Bulkhead's own, exactly as its migration made them.
		  AND NOT ((p.oid::regprocedure::text, encode(sha256(convert_to(p.prosrc, 'UTF8')), 'hex')) IN
		          (SELECT * FROM unnest($1::text[], $2::text[]))
		      AND n.nspname = $3 AND o.rolname = $4 AND p.proconfig IS NOT DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']
		      AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql'))
		ORDER BY 1`, ownDefinerArgs(), []any{&fn, &owner, &super, &bypass, &unforced, &mayAlter, &holdsRows}, func() error {
		revoke := "REVOKE EXECUTE ON FUNCTION " + fn + " FROM PUBLIC, " + ident(isolation.AppRole) + ", or ALTER FUNCTION " + fn + " SECURITY INVOKER"
		runs := "the serving role may execute this SECURITY DEFINER function, which runs as " + owner + ", "
		var why string
		switch {
		case super:
			why = "a superuser"
		case bypass:
			why = "BYPASSRLS"
		case len(unforced) > 0:
			why = "the owner of tenant tables whose RLS is not forced (" + strings.Join(unforced, ", ") + ")"
		}
		switch {
		case why != "":
			out = append(out, finding(CodeFunctionDefinerBypasses, critical, "function "+fn,
				runs+why+", so it bypasses Row-Level Security", revoke))
		case mayAlter:
			out = append(out, finding(CodeFunctionDefinerOwner, critical, "function "+fn,
				runs+"which owns tenant tables and may ALTER them: switch Row-Level Security off, drop the policy", revoke))
		case holdsRows:
			out = append(out, finding(CodeFunctionDefiner, critical, "function "+fn,
				runs+"which holds privileges on tenant tables: another tenant's, or outside the tenant binding", revoke))
		default:
			out = append(out, finding(CodeFunctionDefiner, warning, "function "+fn,
				runs+"with rights the serving role does not hold; Bulkhead creates no such function", revoke))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// predicateFunctions are the functions the tenant predicate runs, with
// their source and volatility as PostgreSQL ships them (language
// internal): current_setting, the text equality NULLIF uses, the uuid
// equality, and the text-to-uuid conversion (text's output, uuid's input).
var predicateFunctions = []struct{ signature, src, volatility string }{
	{"pg_catalog.current_setting(text,boolean)", "show_config_by_name_missing_ok", "s"},
	{"pg_catalog.texteq(text,text)", "texteq", "i"},
	{"pg_catalog.uuid_eq(uuid,uuid)", "uuid_eq", "i"},
	{"pg_catalog.textout(text)", "textout", "i"},
	{"pg_catalog.uuid_in(cstring)", "uuid_in", "i"},
}

// predicateOperators are the operators the tenant predicate uses, with the
// function each must run.
var predicateOperators = []struct{ signature, code string }{
	{"pg_catalog.=(text,text)", "texteq"},
	{"pg_catalog.=(uuid,uuid)", "uuid_eq"},
}

// Builtins reports the functions and operators the tenant predicate runs
// when they are not PostgreSQL's own any more: a superuser may CREATE OR
// REPLACE a built-in function, or change its volatility, and every policy
// then calls what it was given. (current_setting made IMMUTABLE lets a
// cached plan serve one tenant's value to the next.) The policies'
// expressions are checked by TenantTables; this checks what they call.
func Builtins(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var out []Finding
	for _, f := range predicateFunctions {
		var lang, src, volatility string
		err := q.QueryRow(ctx, `
			SELECT l.lanname, p.prosrc, p.provolatile::text
			FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
			WHERE p.oid = to_regprocedure($1)`, f.signature).Scan(&lang, &src, &volatility)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.signature, err)
		}
		if lang != "internal" || strings.TrimSpace(src) != f.src || volatility != f.volatility {
			out = append(out, finding(CodeFunctionBuiltinAltered, critical, "function "+f.signature,
				fmt.Sprintf("the tenant predicate calls %s, which is no longer PostgreSQL's own: language %s, source %q, volatility %s (shipped: internal %s, volatility %s)",
					f.signature, lang, strings.TrimSpace(src), volatility, f.src, f.volatility),
				"restore it from a fresh initdb of the same release (CREATE OR REPLACE FUNCTION "+f.signature+" … LANGUAGE internal AS '"+f.src+"'), then find who replaced it"))
		}
	}
	for _, o := range predicateOperators {
		var code string
		if err := q.QueryRow(ctx, `SELECT oprcode::text FROM pg_operator WHERE oid = to_regoperator($1)`, o.signature).Scan(&code); err != nil {
			return nil, fmt.Errorf("read %s: %w", o.signature, err)
		}
		if code != o.code {
			out = append(out, finding(CodeFunctionBuiltinAltered, critical, "operator "+o.signature,
				"the tenant predicate uses "+o.signature+", which runs "+code+" instead of "+o.code,
				"restore the operator from a fresh initdb of the same release, then find who changed it"))
		}
	}
	return out, nil
}

// EventTriggers reports enabled event triggers whose function no extension
// installed: one runs on the DDL of whoever migrates, with that role's
// rights, and can undo after a migration what verify checked before it.
func EventTriggers(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out         []Finding
		name, event string
		function    string
	)
	err := collect(ctx, q, "event triggers", `
		SELECT e.evtname, e.evtevent, e.evtfoid::regprocedure::text
		FROM pg_event_trigger e
		WHERE e.evtenabled <> 'D'
		  AND NOT EXISTS (SELECT FROM pg_depend d
		                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = e.evtfoid AND d.deptype = 'e')
		ORDER BY 1`, nil, []any{&name, &event, &function}, func() error {
		out = append(out, finding(CodeEventTrigger, critical, "event trigger "+ident(name),
			"event trigger "+name+" runs "+function+" on "+event+" with the rights of whoever runs the DDL (the migrator): Bulkhead creates none",
			"DROP EVENT TRIGGER "+ident(name)))
		return nil
	})
	return out, err
}

// OwnDefinerFunctions are the SECURITY DEFINER functions Bulkhead's own
// control-plane migrations give the serving role, by signature, with the
// SHA-256 of their body as the migration wrote it. One of them is allowed
// only while it is exactly that — in schema bulkhead, owned by the owner
// role, in SQL, with its search_path pinned, and that body: a body
// replaced with CREATE OR REPLACE, another owner or language, or an
// unpinned search_path makes it a definer function like any other.
//
// bulkhead.record_tenant_usage is how serving processes add their
// per-tenant counters (`bulkhead tenant stats`) without the serving role
// holding any write on the control plane: it upserts into
// bulkhead.tenant_usage and drops rows past the retention, and can do
// nothing else.
var OwnDefinerFunctions = map[string]string{
	"bulkhead.record_tenant_usage(timestamp with time zone,text,interval,uuid[],bigint[],bigint[],bigint[],bigint[],bigint[])": "57186eec3c484f82ce12c07c79b99688e0fb61d5d6ed43f677d7d1b392b8b1c5",
}

// ownDefinerArgs are the query arguments of OwnDefinerFunctions: the
// signatures and the hashes, in one order.
func ownDefinerArgs() []any {
	var sigs, sums []string
	for sig, sum := range OwnDefinerFunctions {
		sigs, sums = append(sigs, sig), append(sums, sum)
	}
	return []any{sigs, sums, migrations.ControlSchema, isolation.OwnerRole}
}
