package verify

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Grants reports TRUNCATE, REFERENCES and TRIGGER on tenant tables, and
// REFERENCES on their columns, held by the serving role (q's user),
// PUBLIC, or a role the serving role may act as; and default privileges
// that would give any of those roles anything on objects created later.
// ALL includes all three. None of the three is subject to Row-Level
// Security: TRUNCATE empties every tenant's rows, REFERENCES lets a
// foreign key probe for another tenant's keys, TRIGGER runs code on every
// tenant's writes. Table grants are critical; default privileges warnings
// (they harm only objects created later).
func Grants(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var (
		out                          []Finding
		schema, table, holderName, p string
	)
	err := collect(ctx, q, "tenant table grants", `
		SELECT t.nspname, t.relname, `+holder+`,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM (`+isolation.TenantTableQuery+`) t
		JOIN pg_class c ON c.oid = t.oid
		CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
		  AND a.grantee <> c.relowner AND `+memberOrPublic+`
		GROUP BY 1, 2, 3
		UNION ALL
		SELECT t.nspname, t.relname, `+holder+`,
		       'REFERENCES (' || string_agg(DISTINCT quote_ident(at.attname), ', ') || ')'
		FROM (`+isolation.TenantTableQuery+`) t
		JOIN pg_attribute at ON at.attrelid = t.oid AND at.attacl IS NOT NULL AND NOT at.attisdropped
		CROSS JOIN LATERAL aclexplode(at.attacl) a
		WHERE a.privilege_type = 'REFERENCES' AND a.grantee <> t.relowner AND `+memberOrPublic+`
		GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3, 4`, nil, []any{&schema, &table, &holderName, &p}, func() error {
		name := pgx.Identifier{schema, table}.Sanitize()
		revoke := p
		if strings.HasPrefix(p, "REFERENCES (") {
			revoke = "REFERENCES" + strings.TrimPrefix(p, "REFERENCES")
		}
		out = append(out, finding(CodeTableDangerousGrant, critical, "table "+name,
			holderName+" holds "+p+" on a tenant table; these are not subject to Row-Level Security",
			"REVOKE "+revoke+" ON "+name+" FROM "+grantee(holderName)))
		return nil
	})
	if err != nil {
		return nil, err
	}

	var creator, nsp, kind string
	err = collect(ctx, q, "default privileges", `
		SELECT pg_get_userbyid(d.defaclrole), COALESCE(n.nspname, ''), d.defaclobjtype::text, `+holder+`,
		       string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)
		FROM pg_default_acl d
		LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
		CROSS JOIN LATERAL aclexplode(d.defaclacl) a
		WHERE a.grantee <> d.defaclrole AND `+memberOrPublic+`
		  -- What PostgreSQL gives PUBLIC anyway: EXECUTE on functions, USAGE on types.
		  AND NOT (a.grantee = 0 AND (d.defaclobjtype, a.privilege_type) IN (('f', 'EXECUTE'), ('T', 'USAGE')))
		GROUP BY 1, 2, 3, 4
		ORDER BY 1, 2, 3, 4`, nil, []any{&creator, &nsp, &kind, &holderName, &p}, func() error {
		in, obj := "", "default privileges of "+creator
		if nsp != "" {
			in, obj = " IN SCHEMA "+ident(nsp), obj+" in schema "+nsp
		}
		objects := defaultObjects[kind]
		var dangerous, rest []string
		for _, priv := range strings.Split(p, ", ") {
			if kind == "r" && (priv == "REFERENCES" || priv == "TRIGGER" || priv == "TRUNCATE") {
				dangerous = append(dangerous, priv)
			} else {
				rest = append(rest, priv)
			}
		}
		alter := "ALTER DEFAULT PRIVILEGES FOR ROLE " + ident(creator) + in + " REVOKE "
		if len(dangerous) > 0 {
			out = append(out, finding(CodeDefaultDangerousGrant, warning, obj,
				"tables "+creator+" creates will grant "+strings.Join(dangerous, ", ")+" to "+holderName,
				alter+strings.Join(dangerous, ", ")+" ON TABLES FROM "+grantee(holderName)))
		}
		if len(rest) > 0 {
			out = append(out, finding(CodeDefaultGrant, warning, obj,
				strings.ToLower(objects)+" "+creator+" creates will grant "+strings.Join(rest, ", ")+" to "+holderName+
					", which Bulkhead never grants: they would be within the serving role's reach",
				alter+strings.Join(rest, ", ")+" ON "+objects+" FROM "+grantee(holderName)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// defaultObjects words pg_default_acl.defaclobjtype for ALTER DEFAULT
// PRIVILEGES.
var defaultObjects = map[string]string{"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS", "L": "LARGE OBJECTS"}
