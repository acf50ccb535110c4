package isolationtest

import (
	"context"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// tenantFilter matches the application's tenant filter as stores write it
// (docs/ARCHITECTURE.md): tenant_id = $1, optionally qualified, as a
// condition — after WHERE, AND, OR, ON or an opening parenthesis, so that
// an assignment (SET tenant_id = $1) is left alone. The \b after $1 keeps
// $10 and beyond out.
var tenantFilter = regexp.MustCompile(`(?i)(\b(?:WHERE|AND|OR|ON)\s+|\(\s*)(?:[A-Za-z_][A-Za-z0-9_]*\.)?tenant_id\s*=\s*\$1\b`)

// alwaysTrue replaces the filter (after the keyword it follows, ${1}): it
// keeps $1 in the statement, so the arguments still match, and holds for
// every row.
const alwaysTrue = `${1}$$1::uuid IS NOT NULL`

// Rewrite returns sql with every application tenant filter (tenant_id = $1)
// made always true, and whether it changed anything.
func Rewrite(sql string) (string, bool) {
	out := tenantFilter.ReplaceAllString(sql, alwaysTrue)
	return out, out != sql
}

// FilterBypass takes the application's wall away: every pgx.Tx that
// Strategy.Run hands to the stores rewrites the tenant filter of each
// statement into one that is always true (Rewrite), so that only the
// database stands between tenants. It counts what it rewrote, so a test can
// show the bypass really happened. It is safe for concurrent use.
type FilterBypass struct {
	rewrites atomic.Int64
	mu       sync.Mutex
	seen     map[string]bool
}

// NewFilterBypass returns a bypass that has rewritten nothing yet.
func NewFilterBypass() *FilterBypass { return &FilterBypass{seen: map[string]bool{}} }

// Option decorates the server's isolation.Runner with the bypass.
func (b *FilterBypass) Option() apitest.Option {
	return apitest.WithStrategyDecorator(b.Wrap)
}

// Wrap returns s with the bypass applied to every transaction it runs.
func (b *FilterBypass) Wrap(s isolation.Runner) isolation.Runner {
	return &bypassStrategy{inner: s, b: b}
}

// Rewrites is the number of statements rewritten so far.
func (b *FilterBypass) Rewrites() int64 { return b.rewrites.Load() }

// Statements lists the distinct statements rewritten so far, as rewritten.
func (b *FilterBypass) Statements() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for s := range b.seen {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (b *FilterBypass) rewrite(sql string) string {
	out, changed := Rewrite(sql)
	if changed {
		b.rewrites.Add(1)
		b.mu.Lock()
		b.seen[out] = true
		b.mu.Unlock()
	}
	return out
}

type bypassStrategy struct {
	inner isolation.Runner
	b     *FilterBypass
}

func (s *bypassStrategy) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	return s.inner.Run(ctx, t, func(tx pgx.Tx) error {
		return fn(&bypassTx{Tx: tx, b: s.b})
	}, opts...)
}

// bypassTx rewrites every statement that passes through it. Conn() is left
// alone: stores do not reach around the transaction.
type bypassTx struct {
	pgx.Tx
	b *FilterBypass
}

func (tx *bypassTx) Begin(ctx context.Context) (pgx.Tx, error) {
	inner, err := tx.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &bypassTx{Tx: inner, b: tx.b}, nil
}

func (tx *bypassTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return tx.Tx.Exec(ctx, tx.b.rewrite(sql), args...)
}

func (tx *bypassTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return tx.Tx.Query(ctx, tx.b.rewrite(sql), args...)
}

func (tx *bypassTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return tx.Tx.QueryRow(ctx, tx.b.rewrite(sql), args...)
}

func (tx *bypassTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return tx.Tx.Prepare(ctx, name, tx.b.rewrite(sql))
}

func (tx *bypassTx) SendBatch(ctx context.Context, batch *pgx.Batch) pgx.BatchResults {
	for _, q := range batch.QueuedQueries {
		q.SQL = tx.b.rewrite(q.SQL)
	}
	return tx.Tx.SendBatch(ctx, batch)
}

// WithoutDatabaseWall takes the database's wall away once the server has
// passed its safety check: on every tenant table of the test's database it
// drops every policy and disables Row-Level Security, as a superuser. It
// then shows the wall is gone: a row planted as the superuser is visible to
// the serving role with no tenant bound. Only the application's tenant
// filter then keeps tenants apart. (For strategies whose wall is more than
// RLS — schemas, databases — this removes only the RLS part.)
func WithoutDatabaseWall() apitest.Option {
	return apitest.WithStarted(func(tb testing.TB, e *apitest.Env) {
		tb.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, e.DB.AdminURL)
		if err != nil {
			tb.Fatalf("isolationtest: connect as superuser: %v", err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `
			SELECT c.oid::regclass::text, ARRAY(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bulkhead')
			  AND n.nspname NOT LIKE 'pg\_%'
			  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
			ORDER BY 1`)
		if err != nil {
			tb.Fatalf("isolationtest: list tenant tables: %v", err)
		}
		type table struct {
			name     string
			policies []string
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
			var t table
			return t, r.Scan(&t.name, &t.policies)
		})
		if err != nil {
			tb.Fatalf("isolationtest: list tenant tables: %v", err)
		}
		if len(tables) == 0 {
			tb.Fatal("isolationtest: no tenant table to take the database wall from")
		}
		for _, t := range tables {
			for _, p := range t.policies {
				mustExec(tb, conn, `DROP POLICY `+pgx.Identifier{p}.Sanitize()+` ON `+t.name)
			}
			mustExec(tb, conn, `ALTER TABLE `+t.name+` NO FORCE ROW LEVEL SECURITY`)
			mustExec(tb, conn, `ALTER TABLE `+t.name+` DISABLE ROW LEVEL SECURITY`)
		}
		// The wall is really gone: the serving role, bound to no tenant,
		// sees a row of a tenant that does not exist.
		probe := uuid.New()
		mustExec(tb, conn, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $1, 'aws', 'probe', 'probe')`, probe)
		var seen int
		if err := e.Pools.App.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE id = $1`, probe).Scan(&seen); err != nil {
			tb.Fatalf("isolationtest: probe the removed wall: %v", err)
		}
		mustExec(tb, conn, `DELETE FROM accounts WHERE tenant_id = $1`, probe)
		if seen != 1 {
			tb.Fatalf("isolationtest: the database wall still stands: the serving role sees %d of 1 planted row", seen)
		}
	})
}

func mustExec(tb testing.TB, conn *pgx.Conn, sql string, args ...any) {
	tb.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("isolationtest: %s: %v", sql, err)
	}
}
