// Package verify is Bulkhead's catalog auditor: it reads the live catalogs
// of PostgreSQL, as the serving role sees them, and reports every way they
// differ from what the isolation strategies create — `bulkhead verify`,
// and the check serve runs before it listens.
//
// It works from an allow-list, not a deny-list. For every tenant table the
// one policy, the grants, the triggers (none), rules (none), publications
// (none) and the functions its expressions may call (built-in ones only)
// are known exactly; so are the serving role's attributes and memberships,
// who may act as it, the relations, schemas and functions it may use, and
// its privileges on the database. Anything else is a Finding with a stable
// code, a severity, the object and a one-line fix. docs/VERIFY.md lists
// every code with the flaw that triggers it.
//
// Everything here only reads the catalogs; it is safe to run while the
// server serves.
package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Shorthands for the findings' severities.
const (
	critical = isolation.Critical
	warning  = isolation.Warning
)

// Finding is isolation.Finding: strategies report their own findings with
// it, and this package reports the rest.
type Finding = isolation.Finding

// Verifier reports the findings of strategies' own storage:
// isolation.Registry, or one isolation.Strategy.
type Verifier interface {
	Verify(ctx context.Context) ([]Finding, error)
}

// All is what `bulkhead verify` reports and what serve checks at start:
// ServingRole, Database, ControlPlane and Server on q (a connection or pool
// of the serving role), and the strategies' own (Verifier: the registry
// verifies every strategy it has). Findings are de-duplicated and sorted,
// critical first.
func All(ctx context.Context, q isolation.Querier, strategy Verifier) ([]Finding, error) {
	var all []Finding
	for _, check := range []struct {
		name string
		fn   func(context.Context, isolation.Querier) ([]Finding, error)
	}{
		{"serving role", ServingRole},
		{"database", Database},
		{"control plane", ControlPlane},
		{"server version", Server},
	} {
		f, err := check.fn(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", check.name, err)
		}
		all = append(all, f...)
	}
	st, err := strategy.Verify(ctx)
	if err != nil {
		return nil, err // the registry names the strategy
	}
	return Dedupe(slices.Concat(all, st)), nil
}

// Database runs the checks that hold in every database the serving role
// serves from, whatever the strategy: the tenant tables it can reach (in
// any schema), who owns them, dangerous and default grants, views,
// functions (the built-in ones the tenant predicate runs too), event
// triggers, the relations, schemas, foreign servers and system objects it
// may use, its privileges on the database, and the tenant setting's
// session default. Strategies serving from several databases call it on
// each. The checks of the role itself, which is global to the cluster,
// are ServingRole's.
func Database(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var out []Finding
	for _, check := range []struct {
		name string
		fn   func(context.Context, isolation.Querier) ([]Finding, error)
	}{
		{"reachable tenant tables", reachableTenantTables},
		{"tenant table owners", owners},
		{"grants", Grants},
		{"views", Views},
		{"functions", Functions},
		{"built-in functions", Builtins},
		{"event triggers", EventTriggers},
		{"relations", Relations},
		{"schemas", Schemas},
		{"database privileges", DatabasePrivileges},
		{"foreign servers", ForeignServers},
		{"system objects", SystemObjects},
		{"settings", Settings},
		{"Citus", Citus},
	} {
		f, err := check.fn(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", check.name, err)
		}
		out = append(out, f...)
	}
	return out, nil
}

// Dedupe drops repeated findings (same code, object and detail: the same
// table checked by a strategy and by Database) and sorts the rest:
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
		if s == critical {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(rank(a.Severity), rank(b.Severity)), cmp.Compare(a.Code, b.Code), cmp.Compare(a.Object, b.Object))
	})
	return out
}

// memberOrPublic is a SQL condition on an aclexplode grantee (column
// a.grantee): PUBLIC, or a role the current user may act as — itself, a
// role it inherits, or one it may SET ROLE to (NOINHERIT does not stop
// that). CASE keeps pg_has_role from seeing PUBLIC's OID 0.
const memberOrPublic = `CASE WHEN a.grantee = 0 THEN true ELSE pg_has_role(current_user, a.grantee, 'MEMBER') END`

// holder is a SQL expression naming an aclexplode grantee: PUBLIC or the
// role's name.
const holder = `CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END`

// systemSchemas is a SQL condition on a schema name (column nspname) true
// for pg_catalog and the temporary and TOAST schemas.
const systemSchemas = `(nspname LIKE 'pg\_%')`

// userObject returns a SQL condition on the object alias (with columns
// oid, and a schema n joined) true unless PostgreSQL made it: initdb's
// objects in pg_catalog and information_schema have OIDs below 16384, and
// a superuser may put objects of its own there.
func userObject(alias string) string {
	return `NOT (n.nspname IN ('pg_catalog', 'information_schema') AND ` + alias + `.oid < 16384)`
}

// firstUserOID is FirstNormalObjectId: every object with a lower OID was
// made by initdb, none with this one or higher.
const firstUserOID = 16384

// ident quotes a name as an SQL identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// grantee quotes a role name for GRANT and REVOKE, leaving PUBLIC as it is.
func grantee(name string) string {
	if name == "PUBLIC" {
		return name
	}
	return ident(name)
}

// collect runs sql on q and calls row with each row scanned into dest.
func collect(ctx context.Context, q isolation.Querier, what, sql string, args []any, dest []any, row func() error) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if _, err := pgx.ForEachRow(rows, dest, row); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

// finding builds a Finding.
func finding(code, severity, object, detail, fix string) Finding {
	return Finding{Code: code, Severity: severity, Object: object, Detail: detail, Fix: fix}
}
