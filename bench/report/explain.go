package report

import (
	"slices"
	"strings"
)

// explanations say why a target is missed, keyed by the prefix of the
// target names they explain. They were found with EXPLAIN ANALYZE and
// profiles of the runs; each is printed only when a target it covers is
// missed.
var explanations = []struct{ prefix, text string }{
	{"rls_", "**RLS against the baseline.** The plans (below) are the baseline's plus one node: the policy's " +
		"`tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid` meets the application's `tenant_id = $1`, " +
		"so the planner folds the two into a one-time filter evaluated once per query (a `Result` node above the same index scan) — " +
		"no extra index condition, no extra heap access, and the binding rides in the BEGIN message, so no extra round trip " +
		"(`BenchmarkBinding` in isolation/rls: 3 round trips per transaction bound or not). RLS adds nothing else to these plans: no filter " +
		"evaluating the binding per row, no condition held back behind the policy (a non-leakproof `tags ->> key` stays in the scan's filter), " +
		"no index-only scan lost (`TestLargeReadsUnderRLSAddOnlyAOneTimeCheck` in app/finops holds every large read to that). What is left is " +
		"the `Result` node's pass-through per row, visible only on the summary's thousands of rows: 5–7 % of the backend CPU of a month's " +
		"summary of 17,000 items, 4 % of a sequential scan's (`BenchmarkSummaryUnderRLS` in app/finops, backend CPU time, median of 80), " +
		"and the binding: two set_config calls more in the one prepared statement that also sets the bounds (the baseline's has the bounds alone). " +
		"Around the plans, every tenant transaction (not the baseline's) also starts with the " +
		"live-move fence (`isolation.FenceStep`: the tenant's fence lock taken shared, then a check that the tenant has not moved), " +
		"a call of a PL/pgSQL function of schema `bulkhead_fence` that each session compiles once and whose query plan it keeps " +
		"(pgbench, one message per transaction, one client: 0.072–0.078 ms a transaction with the function, 0.117–0.120 ms with the " +
		"anonymous `DO` block it replaced, compiled and planned on every transaction). " +
		"Layer by layer, on one connection (`BenchmarkOneReadShapes` in isolation/rls, the serving backend's CPU time per point read, " +
		"median of 5 runs): 49.6 µs for the bounded one-statement read without tenancy (the baseline's shape), 56.1 µs with the " +
		"binding and the policy (+13 %), 64.8 µs with the fence as well (+31 % in all). Taken apart with the same pipelines replayed " +
		"(backend CPU, median of 15 passes of 2,000): the fence's lock about 1.5 µs, the PL/pgSQL call itself under 1 µs, its lookup of " +
		"the tenant's record in the control plane (one index probe, run through SPI) about 4–5 µs. That is the point read's gap to the " +
		"baseline, and it is the price of two walls the baseline does not have: the binding the policy reads, and the fence that refuses " +
		"work routed by a placement a live move has left. ≤ 1.03× would need the fence's lookup gone from every transaction (a " +
		"signal of a move that costs no query, which PostgreSQL does not offer across sessions) or the two walls given up. " +
		"Writing the application's filter as the policy's own expression (with the check that " +
		"the binding is `$1` moved to a `LIMIT`, evaluated once) removes the node — the planner makes one index condition of the two — but " +
		"wherever that condition is a filter rather than an index key it reads the setting for every row: a summary over all of a large " +
		"tenant's items, a sequential scan, took 2.2× the CPU. PostgreSQL 15 evaluates a stable expression once only as an index key or a " +
		"one-time filter, so the node stays until the binding can be read once on every path. Single ratios beyond 2–3 % on " +
		"this machine are noise: runs of a few seconds on 2 cores shared with other engineers' builds (see the load average) " +
		"move one round's ratio by more than the target's margin — the lowest–highest round column of the targets: where it " +
		"straddles 1, the baseline itself was the slower in some round. The target is neither proven nor refuted by a median of " +
		"three such rounds; a dedicated machine and longer runs (`-duration 30s -fixed-duration 60s -rounds 5`) would settle it."},
	{"hot_", "**The database strategy with the active tenants within its budget.** Its connections stay open " +
		"(the dials beside the table of that section: a few dozen for tens of thousands of requests), so cold starts are not what " +
		"moves its p99, and at half of the lower saturation of the two strategies each p99 rests on hundreds to thousands of " +
		"requests. What moves it is the machine: at these rates the load generator, the servers and PostgreSQL share two cores " +
		"near their capacity, and a round in which either strategy falls behind the rate spreads its p99 by an order of magnitude " +
		"(the lowest–highest round column, where RLS's own rounds disagree as much). A machine whose load generator does not share " +
		"the server's cores would settle it."},
	{"schema_", "**Schema against RLS.** Execution is the same (compare the plans' execution times), the difference is around it: every " +
		"tenant has its own tables, so a serving connection keeps relation-cache and catalog-cache entries per tenant it has " +
		"served, and PostgreSQL analyses and plans a prepared statement again whenever `search_path` differs from the one it " +
		"was planned under. Measured on one connection (`BenchmarkTenantSwitch` in isolation/schema, backend CPU per point " +
		"read, two runs on this shared machine): 44–47 µs for the same tenant again, 83–131 µs for another tenant the backend " +
		"has served with one statement for all tenants, 54–72 µs with a statement of the tenant's own, 283–326 µs for a tenant " +
		"new to the backend. Three things bring the rounds near the warm figure. The warm-up sweep (settings: runs) has every " +
		"read served to every tenant 20 times before the first round, so that the rounds measure backends that have served the " +
		"tenants, not their first requests: with 1,000 tenants over the pool, 1.5 s runs after a 500 ms warm-up measured mostly " +
		"those. A tenant's one-statement read is prepared once per connection and planned once, with its generic plan " +
		"(`isolation.GenericPlans` in the binding): under PostgreSQL's default each of a statement's first five executions is " +
		"planned for its parameters, and a statement of one tenant and backend runs only a few times in a run. And a connection " +
		"keeps up to 4,096 such statements, the four reads of 1,000 tenants: at 1,024 the least recently used order dropped " +
		"nearly every statement before its next use. The price is the backends' memory, about 45 kB a statement " +
		"(`BenchmarkStatementMemory`). In one quick run (1,000 tenants, point read and month summary, 3 rounds, schema ÷ RLS " +
		"throughput per round) the point read went from 0.31–0.58 to 0.47–0.69 with the sweep alone and to 0.73–0.94 with all " +
		"three. The budget read is one statement now too (its sum a subquery over the budget's period), prepared per tenant " +
		"like the others, where it was two whose second was analysed and planned again at every change of tenant; in a quick " +
		"run (1,000 tenants, 3 rounds, saturation) that took the schema strategy's budget reads from 804 to 947 req/s, and RLS's, " +
		"one round trip instead of four, from 1,954 to 2,897. Its first read on a connection plans it (0.3–0.6 ms, warm), and " +
		"at 1,000 tenants over 20 connections the warm-up sweep does not reach every tenant's within its limit (the sweep share " +
		"of schema.budget_status in the figures), so the rounds still plan many. What is left is the binding's role and " +
		"search_path, and a statement per tenant rather than one. Tenant-affine connections (each tenant, among the idle connections, given the " +
		"one it ranks highest) were measured and not kept: they spread the load over all 20 backends instead of the few that " +
		"the pool's last-released-first order keeps busy, which cost 15–30 % more backend CPU per warm read."},
	{"database_", "**Database against RLS.** The connection budget held (see below), and that is the cost: 50 connections for 1,000 " +
		"tenant databases. A connection serves one database, so a request for a tenant whose pool has no idle connection waits for a " +
		"slot, has the idle connection of the least used other tenant closed, and opens a new one — a new backend on a database " +
		"it has not touched: fork, authentication and cold catalog caches (the connect time below). With 80 % of requests spread over " +
		"990 small tenants, most requests pay it; RLS and schema serve every tenant from one warm pool. The large tenants, which get " +
		"steady traffic, stay warm. Raising the budget, or splitting tenants over more serving processes so each holds fewer, is " +
		"what helps; PgBouncer does not (its pools are per database too). " +
		"An earlier run showed a defect, fixed since (commit \"database: waiting for the connection budget never marks a server " +
		"down\"): under open-loop load a connection attempt that ran out of time waiting for a budget slot was taken for an " +
		"unreachable server, which then failed every request of its tenants for a while (750 of 1,173 point reads in a 30-tenant " +
		"run). The slot wait now fails with an error of its own that never marks a server down, and an attempt keeps time for the " +
		"server itself beyond the acquire timeout. Failed requests in the tables are now 503s of requests that waited out " +
		"`isolation.database.acquire_timeout` for a connection."},
	{"database_peak", "**Database connections above the budget.** The sampler counts the serving role's client backends on " +
		"tenant databases; a parallel query's workers, which pg_stat_activity lists under their leader's role and database, are " +
		"not connections (they count against max_worker_processes) and are not counted — a run before that was told apart saw 51 " +
		"in one of 20,760 samples, with the strategy's own count at 50. The sampled sessions include connections being closed " +
		"after eviction; the strategy holds a slot until the server has closed one (a backend leaves pg_stat_activity before " +
		"its socket closes), so a session over the budget is either a slot given back before its session ended or a session " +
		"the budget never saw. The strategy's own count of slots taken (its high water, in the section on its connections) " +
		"tells the two apart: above the budget, the budget let too many through; at it, a session outlived its slot."},
	{"noisy_", "**The victim under a noisy neighbour.** The walls bound what the attacker may hold — connections " +
		"(`limits.concurrency.per_tenant` slots of the pool or budget, the rest of its requests 429 or queued), time per statement, " +
		"lock waits (409 at once for a key in use), open connections and metric series — but not CPU: the attacker's capped " +
		"transactions still run on the same cores as the victim's reads. Refusing it costs little: a client that comes straight " +
		"back after a refusal gets its further refusals late (`limits.tarpit`; the flooder's answers held), not thousands a second. On a " +
		"2-core machine shared with the load generator, the harness and PostgreSQL, a few heavy summaries at once are enough " +
		"to lengthen the victim's tail even though it never waits for a connection (compare its failed requests: none). A " +
		"lower per-tenant cap (`bulkhead tenant limits SLUG --max-concurrent 2` for a known-heavy tenant), more cores, or " +
		"PostgreSQL on its own machine narrow the gap; the flooder's status codes and the /metrics size show the walls held."},
	{"schema_migrate_vs", migrateVsScript},
	{"database_migrate_vs", migrateVsScript},
	{"schema_migrate", "**Migrating all schemas took longer than 60 s.** The run's migrate parallelism is in the settings below; " +
		"each tenant migration is a goose run over its schema, bound by the catalog writes of creating 4 tables and their indexes."},
}

// migrateVsScript explains migrate against the same DDL as psql scripts.
const migrateVsScript = "**Migrating against the same DDL as plain scripts.** Goose alone (the table's diagnosis column) takes most " +
	"of migrate's time: the control plane's bookkeeping, the checks and the grants around it are the smaller part. A " +
	"connection per schema tenant is no longer among the causes: the schema strategy keeps its owner migration sessions " +
	"from one schema to the next (`isolation.Migrators`, one per concurrent migration), as a psql script keeps one per " +
	"worker; a database tenant needs a connection of its own either way, and the database strategy makes its version " +
	"check, goose and grants on that one. What goose still adds over the scripts is round trips per tenant: the session's " +
	"reset, goose's session lock and unlock, its version table check, the listing of applied versions and one version row " +
	"per migration, each several milliseconds on a loaded 2-core machine. Measured at 300 tenants, parallelism 4, on a " +
	"2-core machine shared with other work: migrating 300 schemas took 26.6 s against 12.2 s for the scripts with a " +
	"connection per tenant (2.18×), 8.4 s against 5.2 s with the sessions kept (1.60×), and with three round trips per " +
	"tenant fewer besides 10.7 s against 9.0 s and 10.0 s against 8.8 s in two runs (1.18×, 1.14×). Databases, whose " +
	"migration changed by one round trip only, measured 1.01×, 1.30×, 1.21× and 1.90× in the same four runs: their two " +
	"anchors alone differed by up to 35 % within a run. Fewer round trips would need goose to batch its bookkeeping. On " +
	"such a machine the ratio moves by tens of per cent from run to run: both anchors of the run are printed below the table. " +
	"Nothing in goose's run grows with the number of schemas: at 1,000 and at 10,000 tenant schemas (32,000 and 320,000 " +
	"relations), goose into 1,000 fresh schemas 4 at a time took 11.8–11.9 ms a schema against 10.4–10.8 ms for the scripts " +
	"(1.12×), and 11.4–15.7 ms against 13.2–14.6 ms (about 1×), alternating, with the grants 10.6–14.5 ms; nor does a kept " +
	"session slow down as it goes: 4,000 fresh schemas, 1,000 per session, among 660,000 relations took 9.5 ms a schema, " +
	"9.7 ms in the first tenth and 9.4 ms in the last (the scripts 11.1 ms). Goose's own statements stay small at 10,000 " +
	"schemas: the version table lookup 0.03 ms, each version row 0.11 ms, the listing of a schema's tables for the grants " +
	"0.14 ms and the grants 0.10 ms. What does grow is " +
	"the file system's work: PostgreSQL unlinks a dropped relation's files at the next checkpoint, and ext4 without a " +
	"journal (this machine's) then passes over every inode freed in the last minutes each time it creates a file. Right " +
	"after a checkpoint had unlinked some 400,000 files, goose took 35 ms a schema, 19–23 ms in the next minutes and 8.5–8.9 " +
	"ms after six (the scripts 8.7 ms then), with 21–23 % of the server's CPU time in the kernel's recently_deleted; " +
	"the scripts suffer alike: in turns right after a checkpoint that unlinked some 100,000 files, the scripts took 43.5 " +
	"and 26.3 ms a schema and goose 30.1 and 24.3 ms, six minutes later 11.0 and 10.7 ms against 13.6 and 12.8 ms " +
	"(`go run ./bench/migscale`); " +
	"whichever migration phase came after such a checkpoint (from the reset or an anchor pass dropping its schemas) was the " +
	"slow one — 81 s and 147 s for the same scripts before and after migrate in one run of make bench/scale, 168 s for " +
	"migrate and 176 s for goose alone. The bench now checkpoints after the reset and waits that window out, and keeps the " +
	"anchors' schemas until the last pass (settings: before timed migrations)."

// explain returns the explanations of the missed targets, one paragraph
// each, or "".
func explain(missed map[string]bool) string {
	var out []string
	for _, name := range sortedKeys(missed) {
		// The explanation with the longest prefix of name covers it.
		best := -1
		for i, e := range explanations {
			if strings.HasPrefix(name, e.prefix) && (best < 0 || len(e.prefix) > len(explanations[best].prefix)) {
				best = i
			}
		}
		if best >= 0 && !slices.Contains(out, explanations[best].text) {
			out = append(out, explanations[best].text)
		}
	}
	return strings.Join(out, "\n\n")
}
