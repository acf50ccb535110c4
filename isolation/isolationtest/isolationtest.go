// Package isolationtest is the conformance suite every isolation strategy
// passes, from its own test file:
//
//	func TestConformance(t *testing.T) { isolationtest.Run(t, isolation.Schema) }
//
// Run starts a whole server (apitest) with the strategy, makes two tenants
// and, in both directions — A attacks B, then B attacks A — tries every way
// the API offers to read, change, delete or point at the other tenant's
// data: its ids in paths, in bodies (references) and in filters, headers
// and query parameters naming it, unique keys and idempotency keys that
// could probe it, consolidated reports without (and, for everything else,
// with) a grant, and raw SQL without a tenant predicate inside a
// tenant-bound transaction. Every tenant operation of the served OpenAPI
// document must be attacked: one the suite does not know fails it. Every
// response to the attacker is searched for the victim's ids, and the
// victim's data is compared before and after. A leak is reported as a test
// error starting with "LEAK:"; anything else that breaks the contract (a
// wrong status, a database error shown to the client) as a plain error.
//
// The walls can be taken away one at a time (FilterBypass,
// WithoutDatabaseWall) to show each holds alone, and ExpectLeak runs the
// suite in a child process to show it catches a leak when both are gone.
//
// Everything here needs a real PostgreSQL (pgtest); functions fail the test
// rather than return errors, and are safe to call from parallel tests.
package isolationtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Run runs the whole conformance suite against strategy: the API attacks
// (RunAPI) and the raw SQL attacks, which only the database's wall can stop.
// opts adjust the server, as for apitest.Start.
func Run(t *testing.T, strategy string, opts ...apitest.Option) {
	t.Helper()
	run(t, strategy, true, opts)
}

// RunAPI runs the API attacks of the suite only: what the application's
// tenant filter must stop on its own when the database's wall is removed
// (raw SQL without a tenant predicate has, by definition, no such filter).
func RunAPI(t *testing.T, strategy string, opts ...apitest.Option) {
	t.Helper()
	run(t, strategy, false, opts)
}

func run(t *testing.T, strategy string, rawSQL bool, opts []apitest.Option) {
	t.Helper()
	env := apitest.Start(t, nil, append([]apitest.Option{apitest.WithStrategy(strategy)}, opts...)...)
	s := &suite{env: env, spec: loadSpec(t, env), covered: map[string]bool{}}
	a, b := env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")
	for _, tn := range []apitest.Tenant{a, b} {
		if tn.Isolation != strategy {
			t.Fatalf("tenant %s was provisioned with %q, want %q", tn.Slug, tn.Isolation, strategy)
		}
	}
	data := map[string]*holdings{a.Slug: s.seed(t, a, 0), b.Slug: s.seed(t, b, 1)}
	for _, dir := range []struct{ self, other apitest.Tenant }{{a, b}, {b, a}} {
		name := dir.self.Slug + " attacks " + dir.other.Slug
		t.Run(name, func(t *testing.T) {
			self, other := data[dir.self.Slug], data[dir.other.Slug]
			before := s.snapshot(t, other)
			s.attackAccounts(t, self, other)
			s.attackCosts(t, self, other)
			s.attackBudgets(t, self, other)
			s.attackConsolidated(t, self, other)
			s.attackWithGrant(t, self, other)
			s.attackMe(t, self, other)
			s.attackPublic(t, self, other)
			if rawSQL {
				s.attackSQL(t, self, other)
			}
			after := s.snapshot(t, other)
			for _, k := range slices.Sorted(maps.Keys(before)) {
				if before[k] != after[k] {
					t.Errorf("LEAK: %s changed %s's %s:\nbefore %s\nafter  %s", dir.self.Slug, dir.other.Slug, k, before[k], after[k])
				}
			}
			if len(after) != len(before) {
				t.Errorf("LEAK: %s's data went from %d to %d resources", dir.other.Slug, len(before), len(after))
			}
		})
	}
	if rawSQL {
		t.Run("unbound", func(t *testing.T) { s.unbound(t, a, b) })
	}
	t.Run("every tenant operation attacked", func(t *testing.T) { s.checkCoverage(t) })
}

type suite struct {
	env     *apitest.Env
	spec    []operation
	covered map[string]bool
}

// attackSQL runs raw SQL without any tenant predicate in a transaction bound
// to self: it must reach self's rows only, on every tenant table it can see.
// Its own predicates avoid the form "tenant_id = $1", which FilterBypass
// rewrites: this SQL is the attacker's, not the stores'.
func (s *suite) attackSQL(t *testing.T, self, other *holdings) {
	t.Helper()
	ctx := context.Background()
	me, them := self.tenant.ID, other.tenant.ID
	errRollback := errors.New("rolled back on purpose")
	err := s.env.Strategy.Run(ctx, self.tenant.Isolated(), func(tx pgx.Tx) error {
		var bound string
		if err := tx.QueryRow(ctx, `SELECT current_setting('`+isolation.Setting+`', true)`).Scan(&bound); err != nil {
			return err
		}
		if bound != me.String() {
			t.Errorf("the transaction is bound to %q, want %s", bound, me)
		}
		tables := visibleTenantTables(t, tx)
		if !slices.Contains(tables, "accounts") {
			t.Fatalf("tenant tables visible in %s's transaction: %v; want accounts among them", self.tenant.Slug, tables)
		}
		// Deleting a table's rows deletes the rows that reference them
		// first: deferred constraints do not reach Citus's workers, so a
		// DELETE must not rely on them to be judged by what it reaches.
		var schema string
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return err
		}
		order, err := isolation.TenantTablesInDeleteOrder(ctx, tx, schema)
		if err != nil {
			return err
		}
		for _, table := range tables {
			ident := pgx.Identifier{table}.Sanitize()
			var mine, foreign int
			if err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE tenant_id IN ($1)), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM `+ident, me).Scan(&mine, &foreign); err != nil {
				return fmt.Errorf("count %s: %w", table, err)
			}
			if foreign != 0 {
				t.Errorf("LEAK: SELECT without a tenant predicate on %s in %s's transaction sees %d rows of other tenants", table, self.tenant.Slug, foreign)
			}
			var targeted int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+ident+` WHERE tenant_id IN ($1)`, them).Scan(&targeted); err != nil {
				return fmt.Errorf("count %s: %w", table, err)
			}
			if targeted != 0 {
				t.Errorf("LEAK: SELECT naming %s on %s in %s's transaction sees %d rows", other.tenant.Slug, table, self.tenant.Slug, targeted)
			}
			if want, ok := self.rows[table]; ok && mine != want {
				t.Errorf("%s's transaction sees %d of its %d rows of %s", self.tenant.Slug, mine, want, table)
			}
			// Writes without a predicate touch self's rows only; each runs
			// in a savepoint rolled back at once.
			var referencing []string
			for _, r := range order {
				if r == table {
					break
				}
				referencing = append(referencing, `DELETE FROM `+pgx.Identifier{r}.Sanitize())
			}
			for _, stmt := range []struct {
				before   []string
				sql      string
				args     []any
				fails    bool // the statement must fail: it would move or plant a row
				affected int  // else, the rows it must touch
			}{
				{nil, `UPDATE ` + ident + ` SET tenant_id = tenant_id`, nil, false, mine},
				{referencing, `DELETE FROM ` + ident, nil, false, mine},
				{nil, `UPDATE ` + ident + ` SET tenant_id = $1`, []any{them}, mine > 0, 0},
				// A copy of one of self's rows (or, with none, a row of
				// NULLs) claimed for the other tenant.
				{nil, `INSERT INTO ` + ident + ` SELECT * FROM jsonb_populate_record(NULL::` + ident + `,
					COALESCE((SELECT to_jsonb(x) FROM ` + ident + ` x LIMIT 1), '{}') || jsonb_build_object('tenant_id', $1::uuid))`, []any{them}, true, 0},
			} {
				tag, err := inSavepoint(ctx, tx, stmt.before, stmt.sql, stmt.args...)
				switch {
				case stmt.fails && err == nil:
					t.Errorf("LEAK: %s in %s's transaction wrote %d rows for %s", oneLine(stmt.sql), self.tenant.Slug, tag, other.tenant.Slug)
				case !stmt.fails && err != nil:
					t.Errorf("%s in %s's transaction: %v", oneLine(stmt.sql), self.tenant.Slug, err)
				case !stmt.fails && tag != int64(stmt.affected):
					t.Errorf("LEAK: %s in %s's transaction touched %d rows, want its own %d", oneLine(stmt.sql), self.tenant.Slug, tag, stmt.affected)
				}
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("raw SQL in %s's transaction: %v", self.tenant.Slug, err)
	}
}

// unbound checks that the serving pool, with no tenant bound, reaches no
// tenant's rows, and that no pooled connection kept a tenant.
func (s *suite) unbound(t *testing.T, a, b apitest.Tenant) {
	ctx := context.Background()
	for range 4 { // more than one connection, when the pool has them
		var setting *string
		if err := s.env.Pools.App.QueryRow(ctx, `SELECT NULLIF(current_setting('`+isolation.Setting+`', true), '')`).Scan(&setting); err != nil {
			t.Fatal(err)
		}
		if setting != nil {
			t.Errorf("LEAK: a pooled serving connection still carries tenant %s", *setting)
		}
		var n int
		err := s.env.Pools.App.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE tenant_id IN ($1, $2)`, a.ID, b.ID).Scan(&n)
		if err == nil && n != 0 {
			t.Errorf("LEAK: the serving role with no tenant bound sees %d rows", n)
		}
	}
}

// inSavepoint runs the statements before, then sql, in a savepoint of tx
// that it rolls back, and returns the rows sql affected.
func inSavepoint(ctx context.Context, tx pgx.Tx, before []string, sql string, args ...any) (int64, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer sp.Rollback(ctx)
	// Foreign keys between tenant tables are deferrable: defer them, so a
	// delete without a predicate is judged by what it reaches, not refused
	// because of the rows that still point at it.
	if _, err := sp.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
		return 0, err
	}
	for _, stmt := range before {
		if _, err := sp.Exec(ctx, stmt); err != nil {
			return 0, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	tag, err := sp.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

// visibleTenantTables lists the tables with a tenant_id column that the
// transaction's role can read without naming a schema.
func visibleTenantTables(t *testing.T, tx pgx.Tx) []string {
	t.Helper()
	rows, err := tx.Query(context.Background(), `
		SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bulkhead')
		  AND has_table_privilege(c.oid, 'SELECT')
		  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`)
	if err != nil {
		t.Fatalf("list tenant tables: %v", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list tenant tables: %v", err)
	}
	return tables
}

// must sends a request as t's editor and fails tb unless the status is want.
func (s *suite) must(tb testing.TB, t apitest.Tenant, want int, method, path string, body any) *apitest.Response {
	tb.Helper()
	r := s.do(tb, t.Editor, method, path, body, nil)
	if r.Status != want {
		tb.Fatalf("%s %s as %s: %s, want %d", method, path, t.Slug, r, want)
	}
	return r
}

// request sends a request as self's editor, checking the answer against
// other's identifiers.
func (s *suite) request(tb testing.TB, self apitest.Tenant, method, path string, body any, other *holdings, header ...string) *apitest.Response {
	tb.Helper()
	return s.do(tb, self.Editor, method, path, body, other, header...)
}

// dbText are fragments of PostgreSQL errors that must never reach a client.
var dbText = regexp.MustCompile(`SQLSTATE|row-level security|violates|pgx|pgconn|relation "|syntax error|duplicate key|ERROR:`)

// do sends a request, records the operation as covered, and reports a leak
// when the body names any of other's identifiers (nil: none to check).
func (s *suite) do(tb testing.TB, key, method, path string, body any, other *holdings, header ...string) *apitest.Response {
	tb.Helper()
	if op := s.match(method, path); op != "" {
		s.covered[op] = true
	}
	r := s.env.Do(tb, method, path, key, body, header...)
	if other != nil {
		for _, id := range other.ids() {
			if strings.Contains(string(r.Body), id) {
				tb.Errorf("LEAK: %s %s answered %d with %s's id %s: %s", method, path, r.Status, other.tenant.Slug, id, r.Body)
			}
		}
	}
	if r.Status >= 400 {
		var p struct {
			Title, Detail string
			Errors        []struct{ Detail string }
		}
		_ = json.Unmarshal(r.Body, &p)
		text := p.Title + "\n" + p.Detail
		for _, e := range p.Errors {
			text += "\n" + e.Detail
		}
		if dbText.MatchString(text) {
			tb.Errorf("%s %s shows a database error to the client: %s", method, path, r.Body)
		}
	}
	return r
}

func problemDetail(r *apitest.Response) string {
	var p struct {
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(r.Body, &p)
	return p.Detail
}

func oneLine(sql string) string { return strings.Join(strings.Fields(sql), " ") }
