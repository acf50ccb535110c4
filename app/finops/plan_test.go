package finops

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// planData is a database with two tenants' cost items: big has items
// items over 3 accounts and 20 services, spread evenly over days days
// from 1 October 2026, and small has others, all in October 2026.
type planData struct {
	app, admin *pgxpool.Pool // the serving role (under RLS); a superuser (RLS bypassed)
	big, small uuid.UUID
}

func newPlanData(tb testing.TB, items, days, others int) *planData {
	tb.Helper()
	db := pgtest.New(tb)
	d := &planData{app: pgtest.Pool(tb, db.AppURL), admin: pgtest.Pool(tb, db.AdminURL), big: uuid.New(), small: uuid.New()}
	db.Exec(tb, `
		INSERT INTO accounts (tenant_id, id, provider, external_id, name)
		SELECT t.id, md5(t.id::text || k)::uuid, (ARRAY['aws', 'azure', 'gcp'])[k], 'ext-' || k, 'Account ' || k
		FROM unnest($1::uuid[]) AS t (id), generate_series(1, 3) AS k`, []uuid.UUID{d.big, d.small})
	db.Exec(tb, `
		INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, effective_cost, currency, tags)
		SELECT t.id, gen_random_uuid(), md5(t.id::text || (1 + g % 3))::uuid, 'svc-' || (g % 20),
		       date '2026-10-01' + g % t.days, (g % 1000)::numeric / 100, (g % 900)::numeric / 100, 'USD',
		       jsonb_build_object('team', 't' || g % 4)
		FROM unnest($1::uuid[], $2::int[], $3::int[]) AS t (id, n, days), generate_series(1, t.n) AS g`,
		[]uuid.UUID{d.big, d.small}, []int32{int32(items), int32(others)}, []int32{int32(days), 31})
	db.Exec(tb, `ANALYZE accounts, cost_items`)
	return d
}

// bound runs fn in a transaction of pool bound to tenant as the strategies
// bind it.
func bound(tb testing.TB, pool *pgxpool.Pool, tenant uuid.UUID, fn func(pgx.Tx) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL "+isolation.Setting+" = '"+tenant.String()+"'"); err != nil {
		tb.Fatal(err)
	}
	if err := fn(tx); err != nil {
		tb.Fatal(err)
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON) a plan's shape is made of.
type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	OneTime  string     `json:"One-Time Filter"`
	Filter   string     `json:"Filter"`
	Index    string     `json:"Index Name"`
	Plans    []planNode `json:"Plans"`
}

// String is the node tree, one node a line, indented by depth.
func (n planNode) String() string {
	var b strings.Builder
	var walk func(n planNode, depth int)
	walk = func(n planNode, depth int) {
		fmt.Fprintf(&b, "%s%s", strings.Repeat("  ", depth), n.Type)
		if n.Relation != "" {
			fmt.Fprintf(&b, " on %s", n.Relation)
		}
		if n.Index != "" {
			fmt.Fprintf(&b, " using %s", n.Index)
		}
		if n.OneTime != "" {
			fmt.Fprintf(&b, " one-time filter %s", n.OneTime)
		}
		b.WriteString("\n")
		for _, c := range n.Plans {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return b.String()
}

// has reports whether a node of type typ is in the tree.
func (n planNode) has(typ string) bool {
	if n.Type == typ {
		return true
	}
	for _, c := range n.Plans {
		if c.has(typ) {
			return true
		}
	}
	return false
}

// explain returns the plan of sql with args as the server plans it for
// these values (the simple protocol writes them in, as a custom plan
// would have them), in a transaction of pool bound to tenant.
func explain(tb testing.TB, pool *pgxpool.Pool, tenant uuid.UUID, sql string, args []any) planNode {
	tb.Helper()
	var out []struct{ Plan planNode }
	bound(tb, pool, tenant, func(tx pgx.Tx) error {
		var js []byte
		err := tx.QueryRow(context.Background(), `EXPLAIN (FORMAT JSON, COSTS OFF) `+sql,
			append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...).Scan(&js)
		if err != nil {
			return fmt.Errorf("explain %s: %w", sql, err)
		}
		return json.Unmarshal(js, &out)
	})
	if len(out) != 1 {
		tb.Fatalf("EXPLAIN returned %d plans", len(out))
	}
	return out[0].Plan
}

// largeReads are the statements of the large reads for tenant t: the
// summary by several groupings and filters, and the first page of the
// cost list, with and without a join.
func largeReads(tb testing.TB, t uuid.UUID) map[string]struct {
	sql  string
	args []any
} {
	tb.Helper()
	from := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2026, 10, 31, 0, 0, 0, 0, time.UTC)
	tn := isolation.Tenant{ID: t}
	out := map[string]struct {
		sql  string
		args []any
	}{}
	for name, q := range map[string]SummaryQuery{
		"summary by service":            {Filter: CostFilter{From: from, To: to}, GroupBy: ByService},
		"summary of all time":           {GroupBy: ByService},
		"summary by provider":           {Filter: CostFilter{From: from, To: to}, GroupBy: ByProvider},
		"summary by tag, one service":   {Filter: CostFilter{From: from, To: to, Service: "svc-3"}, GroupBy: TagPrefix + "team"},
		"summary by day, effective":     {Filter: CostFilter{From: from, To: to}, GroupBy: ByDay, Metric: EffectiveCost},
		"summary by account, tag match": {Filter: CostFilter{From: from, To: to, Tags: []TagFilter{{Key: "team", Value: "t1"}}}, GroupBy: ByAccount},
	} {
		sql, args, err := q.summarySQL(tn)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = struct {
			sql  string
			args []any
		}{sql, args}
	}
	for name, f := range map[string]CostFilter{
		"cost list":                {From: from, To: to},
		"cost list, one provider":  {From: from, To: to, Provider: "aws"},
		"cost list, one service":   {From: from, To: to, Service: "svc-3"},
		"cost list, one tag value": {From: from, To: to, Tags: []TagFilter{{Key: "team", Value: "t2"}}},
	} {
		sql, args, err := costsSQL(tn, f, Page{})
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = struct {
			sql  string
			args []any
		}{sql, args}
	}
	return out
}

// withoutGates is n with every Result node that only gates its one child
// with a one-time filter replaced by that child.
func (n planNode) withoutGates() planNode {
	if n.Type == "Result" && n.OneTime != "" && len(n.Plans) == 1 {
		return n.Plans[0].withoutGates()
	}
	out := n
	out.Plans = nil
	for _, c := range n.Plans {
		out.Plans = append(out.Plans, c.withoutGates())
	}
	return out
}

// count returns how many nodes of the tree satisfy f.
func (n planNode) count(f func(planNode) bool) int {
	c := 0
	if f(n) {
		c++
	}
	for _, ch := range n.Plans {
		c += ch.count(f)
	}
	return c
}

// What Row-Level Security adds to the plans of the large reads, which the
// bench measures against a baseline without it: one Result node per
// statement, checking once that the transaction's binding is the tenant
// the application asks for (the policy's
// "tenant_id = NULLIF(current_setting('app.tenant_id', true), ”)::uuid"
// folded with the application's "tenant_id = $1"), above the node tree the
// statement has without RLS — the same scans and indexes, filters
// evaluated in the same place, no index-only scan lost, and the binding
// never evaluated per row. Every row the scan returns passes through that
// node: that is the per-row cost of RLS on these reads (measured by
// BenchmarkSummaryUnderRLS), and this test fails if RLS ever costs more.
func TestLargeReadsUnderRLSAddOnlyAOneTimeCheck(t *testing.T) {
	t.Parallel()
	d := newPlanData(t, 3000, 31, 50)
	for name, r := range largeReads(t, d.big) {
		rls := explain(t, d.app, d.big, r.sql, r.args)
		none := explain(t, d.admin, d.big, r.sql, r.args) // a superuser: no policy applies
		t.Logf("%s under RLS:\n%s", name, rls)
		if got, want := rls.withoutGates().String(), none.String(); got != want {
			t.Errorf("%s: under RLS, the plan but for its one-time checks differs from the plan without RLS.\nunder RLS:\n%s\nwithout:\n%s", name, rls, none)
		}
		gates := rls.count(func(n planNode) bool { return n.Type == "Result" && strings.Contains(n.OneTime, "current_setting") })
		if gates != 1 {
			t.Errorf("%s: %d one-time checks of the binding under RLS, want 1:\n%s", name, gates, rls)
		}
		if perRow := rls.count(func(n planNode) bool { return strings.Contains(n.Filter, "current_setting") }); perRow != 0 {
			t.Errorf("%s: the binding is evaluated per row in %d filters under RLS:\n%s", name, perRow, rls)
		}
	}
}

// policyForm is the summary sql with the application's tenant filter
// written as the policy's own expression, and the check that the binding
// is $1 moved into the LIMIT (evaluated once): the form that lets the
// planner make one condition of the two, with no Result node, but
// evaluates the binding per row wherever that condition is a filter (a
// sequential scan) rather than an index condition.
func policyForm(sql string) string {
	const bound = `NULLIF(current_setting('` + isolation.Setting + `', true), '')::uuid`
	for _, alias := range []string{"a", "c"} {
		sql = strings.ReplaceAll(sql, alias+".tenant_id = $1", alias+".tenant_id = "+bound)
	}
	return sql + ` LIMIT CASE WHEN ` + bound + ` = $1 THEN NULL ELSE 0 END`
}

// BenchmarkSummaryUnderRLS times the summary by service of a tenant with
// about 17,000 items a month (the bench's large tenants have about 20,000),
// for one month (a bitmap index scan) and for all time (a sequential
// scan: most of the table is the tenant's, as all of it is in the schema
// and database strategies), each as the statement is written
// ("tenant_id = $1") and in the policy's form (policyForm), under
// Row-Level Security as the serving role and without it as a superuser.
// Each iteration runs every variant in turn in a transaction bound to the
// tenant (custom plans, no parallel workers), taking the CPU time of the
// statement alone; the figures are ratios of medians to the statement as
// written without RLS:
//
//	go run ./internal/cmd/withpg -- go test -run '^$' -bench SummaryUnderRLS -benchtime 40x ./app/finops/
func BenchmarkSummaryUnderRLS(b *testing.B) {
	d := newPlanData(b, 102000, 183, 20000)
	ctx := context.Background()
	month := CostFilter{From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}
	type variant struct {
		name string
		pool *pgxpool.Pool
		sql  string
		args []any
	}
	var variants []variant
	for _, period := range []struct {
		name string
		f    CostFilter
	}{{"month", month}, {"all_time", CostFilter{}}} {
		sql, args, err := SummaryQuery{Filter: period.f}.summarySQL(isolation.Tenant{ID: d.big})
		if err != nil {
			b.Fatal(err)
		}
		variants = append(variants,
			variant{period.name + ".no_rls", d.admin, sql, args},
			variant{period.name + ".rls", d.app, sql, args},
			variant{period.name + ".rls_policy_form", d.app, policyForm(sql), args},
			variant{period.name + ".no_rls_policy_form", d.admin, policyForm(sql), args},
		)
	}
	// run runs v once and returns the CPU time its backend spent on the
	// statement (/proc/PID/schedstat, when the server runs on this
	// machine, as the test servers do: what other work on a busy machine
	// does to wall time cancels out), or else the wall time.
	run := func(v variant) time.Duration {
		var took time.Duration
		bound(b, v.pool, d.big, func(tx pgx.Tx) error {
			// Custom plans, as the bench's plans show: the same plan shape
			// for every variant of a period, whatever the plan cache does.
			if _, err := tx.Exec(ctx, `SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL plan_cache_mode = force_custom_plan`); err != nil {
				return err
			}
			pid := tx.Conn().PgConn().PID()
			cpu0, ok0 := pgtest.BackendCPU(pid)
			start := time.Now()
			r, err := tx.Query(ctx, v.sql, v.args...)
			if err != nil {
				return err
			}
			n, err := pgx.CollectRows(r, func(pgx.CollectableRow) (int, error) { return 1, nil })
			took = time.Since(start)
			if cpu1, ok1 := pgtest.BackendCPU(pid); ok0 && ok1 {
				took = cpu1 - cpu0
			}
			if err == nil && len(n) != 20 {
				err = fmt.Errorf("%s: %d totals, want 20", v.name, len(n))
			}
			return err
		})
		return took
	}
	for _, v := range variants { // show the plan, prepare and warm each
		bound(b, v.pool, d.big, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
				return err
			}
			r, err := tx.Query(ctx, `EXPLAIN (COSTS OFF) `+v.sql, append([]any{pgx.QueryExecModeSimpleProtocol}, v.args...)...)
			if err != nil {
				return err
			}
			plan, err := pgx.CollectRows(r, pgx.RowTo[string])
			b.Logf("%s:\n%s", v.name, strings.Join(plan, "\n"))
			return err
		})
		for range 3 {
			run(v)
		}
	}
	times := make([][]time.Duration, len(variants))
	b.ResetTimer()
	for range b.N {
		for i, v := range variants {
			times[i] = append(times[i], run(v))
		}
	}
	b.StopTimer()
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2])
	}
	for i := 0; i < len(variants); i += 4 {
		base := median(times[i])
		for j := i + 1; j < i+4; j++ {
			b.ReportMetric(median(times[j])/base, variants[j].name)
		}
	}
}
