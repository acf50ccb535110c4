package report

import (
	"fmt"
	"strings"
	"time"
)

// citusPrefix names the deployments of a -citus run on the Citus
// coordinator (the harness's CitusPrefix).
const citusPrefix = "citus_"

// WriteCitus writes citus-latest.json and citus-latest.md into dir: the
// results of a -citus run.
func WriteCitus(dir string, r *Results) error {
	return writeFiles(dir, r, "citus-latest.json", map[string]func(*Results) string{
		"citus-latest.md": CitusMarkdown,
	})
}

// plainStrategies are the strategies of a -citus run that ran on both
// clusters, in report order.
func (r *Results) plainStrategies() []string {
	var out []string
	for _, s := range r.Strategies {
		if !strings.HasPrefix(s, citusPrefix) {
			out = append(out, s)
		}
	}
	return out
}

// citusRun is one workload of one strategy that ran on both clusters:
// plain and citus prefix its figures on plain PostgreSQL and on Citus.
type citusRun struct{ workload, strategy, plain, citus string }

// citusRuns are the runs of a -citus run, per workload and strategy in
// report order.
func (r *Results) citusRuns() []citusRun {
	var out []citusRun
	for _, w := range r.Workloads {
		for _, s := range r.plainStrategies() {
			plain := s + "." + w + "."
			out = append(out, citusRun{w, s, plain, citusPrefix + plain})
		}
	}
	return out
}

// CitusMarkdown is citus-latest.md: per workload and strategy the Citus
// coordinator's figures against plain PostgreSQL's of the same rounds,
// the database servers' CPU per request, what the coordinator hop costs
// and how that would scale with workers.
func CitusMarkdown(r *Results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := r.Machine
	p("# Citus coordinator against plain PostgreSQL\n\n")
	p("`make bench/citus`, %s, on %s (%d cores, %.0f GiB), %s, Go %s, PostgreSQL %s, Citus %s; load average %.2f when the run began (the machine is shared).\n\n",
		time.Now().UTC().Format("2006-01-02"), m.CPU, m.Cores, m.MemoryGiB, m.OS, strings.TrimPrefix(m.Go, "go"), m.PostgreSQL, m.Citus, m.LoadAvg)
	p("The same data set, tenants and request sequences on two clusters of this machine: one plain PostgreSQL server, and a Citus coordinator with its workers. ")
	p("Each strategy runs on the plain server and then on the coordinator, back to back in every round; a ratio is Citus ÷ plain, ")
	p("the median of each round's ratio, with the lowest and highest round beside it. Throughput is at saturation; latency at one fixed rate for both ")
	p("(a share of the lowest saturation throughput of the workload). Above 1 is more for throughput, slower for latency. ")
	p("At that common rate a Citus deployment runs nearer its own saturation than the plain one (the rate is a share of Citus's throughput, a smaller share of plain's), ")
	p("so the latency ratios include the queueing that follows from the throughput ratio, not only the hop; on a shared machine they are the noisiest figures here. ")
	if rounds, ok := r.Get("run.rounds"); ok && rounds < 2 {
		p("**This run has one round**: no lowest–highest spread, and each ratio rests on one pair of runs.")
	}
	p("\n\n")

	p("## Ratios\n\n| workload | strategy | throughput Citus ÷ plain | p50 Citus ÷ plain | p99 Citus ÷ plain | failed requests (plain / Citus) |\n|---|---|---:|---:|---:|---:|\n")
	for _, run := range r.citusRuns() {
		w, s, pl, c := run.workload, run.strategy, run.plain, run.citus
		p("| %s | %s | %s | %s | %s | %s / %s |\n", w, s, r.ratioCell(c+"throughput_vs_plain"), r.ratioCell(c+"p50_vs_plain"),
			r.ratioCell(c+"p99_vs_plain"), r.cell(pl+"errors"), r.cell(c+"errors"))
	}
	p("\n")

	p("## Per workload\n\n")
	p("Database CPU is the CPU time of the database servers' processes (postmaster and backends, from `/proc`) over the saturation runs, per request answered: ")
	p("the plain server's, or the coordinator's and the workers' apart. The Bulkhead servers and the load generator run in the harness's process and are not in it.\n\n")
	for _, w := range r.Workloads {
		rate, _ := r.Get(w + ".fixed_rate_rps")
		p("### %s\n\n%s Latency at %s req/s.\n\n", w, workloadText[w], num(rate))
		p("| strategy | plain req/s | Citus req/s | plain p50 ms | Citus p50 ms | plain p99 ms | Citus p99 ms | p99 samples (plain / Citus) | plain DB CPU ms/req | Citus coordinator CPU ms/req | Citus workers CPU ms/req | coordinator share of Citus CPU |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.plainStrategies() {
			f := func(name string) string { return r.cell(s + "." + w + "." + name) }
			c := func(name string) string { return r.cell(citusPrefix + s + "." + w + "." + name) }
			p("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |\n", s,
				f("throughput_rps"), c("throughput_rps"), f("p50_ms"), c("p50_ms"), f("p99_ms"), c("p99_ms"),
				f("p99_samples"), c("p99_samples"), f("db_cpu_ms_per_req"),
				c("coordinator_cpu_ms_per_req"), c("workers_cpu_ms_per_req"), c("coordinator_cpu_share"))
		}
		p("\n")
	}

	p("## Provisioning\n\n| strategy | plain: one tenant, median ms | Citus: one tenant, median ms | plain: all tenants, s | Citus: all tenants, s |\n|---|---:|---:|---:|---:|\n")
	for _, s := range r.plainStrategies() {
		p("| %s | %s | %s | %s | %s |\n", s, r.cell(s+".provision_ms"), r.cell(citusPrefix+s+".provision_ms"),
			r.cell(s+".provision_all_s"), r.cell(citusPrefix+s+".provision_all_s"))
	}
	p("\nOn Citus a schema tenant's provisioning creates a distributed schema: its tables are created on the coordinator and on the worker its shard group lands on.\n\n")

	p("## What the coordinator hop costs\n\n")
	p("Every workload here is tenant-scoped: each statement the stores send carries `tenant_id = $1` (rls), or names only the tenant's own schema (schema). ")
	p("Citus plans such a statement on the coordinator as a *router* query: the fast-path planner finds the one shard the tenant's id hashes to ")
	p("(or the one shard group of the tenant's distributed schema) and sends the statement, rewritten to the shard's table names, to the worker that holds it. ")
	p("No statement here fans out to several shards; the plans below show `Task Count: 1`. What the hop adds, per request, is then:\n\n")
	p("- **planning twice**: the coordinator parses and plans the statement (distributed planning, shard pruning, deparsing the shard query), the worker parses and plans it again;\n")
	p("- **a round trip per statement** from coordinator to worker over a cached connection, and the rows relayed back through the coordinator;\n")
	p("- **the transaction carried over**: the first statement of a transaction on a worker opens a remote transaction there, with the tenant binding ")
	p("(`SET LOCAL app.tenant_id`, propagated because `citus.propagate_set_commands` is `local`) sent ahead of it, and COMMIT goes to the worker too ")
	p("(one worker: a one-phase commit; a transaction that wrote on two would commit in two phases);\n")
	p("- **two backends busy instead of one** for the duration of each statement: the coordinator's waits on the worker's;\n")
	p("- **schema: a new worker connection per transaction.** Citus reaches the worker as the current role, which for the schema strategy is the tenant's own role; ")
	p("caching one connection per worker and tenant role in every serving backend would hold up to pool × tenants connections on each worker ")
	p("(at 200 tenants it ran the workers out of connection slots), so the schema strategy's transactions end their worker connections with them ")
	p("(`citus.max_cached_conns_per_worker = 0` in the binding). Every schema request therefore starts a worker backend and authenticates it ")
	p("(client certificate over TLS): most of the workers' CPU per schema request below. A role per tenant costs that on Citus; rls, one role for every tenant, ")
	p("keeps its cached connections.\n\n")
	p("On this machine the coordinator and the workers share the cores with the plain server, the Bulkhead servers and the load generator, and the hop is loopback: ")
	p("it costs CPU, not network time. The database CPU per request above puts a number on it:\n\n")
	for _, run := range r.citusRuns() {
		w, s, pl, c := run.workload, run.strategy, run.plain, run.citus
		plain, ok1 := r.Get(pl + "db_cpu_ms_per_req")
		coord, ok2 := r.Get(c + "coordinator_cpu_ms_per_req")
		work, ok3 := r.Get(c + "workers_cpu_ms_per_req")
		if !ok1 || !ok2 || !ok3 || plain <= 0 {
			continue
		}
		p("- %s %s: %s ms of database CPU per request on plain PostgreSQL, %s ms on Citus (coordinator %s + workers %s), %s× as much; throughput %s×, p50 %s×.\n",
			w, s, num(plain), num(coord+work), num(coord), num(work), num((coord+work)/plain),
			r.cell(c+"throughput_vs_plain"), r.cell(c+"p50_vs_plain"))
	}
	for _, run := range r.citusRuns() {
		w, s, pl, c := run.workload, run.strategy, run.plain, run.citus
		worker, ok1 := r.Get(c + "worker_explain_ms")
		coord, ok2 := r.Get(c + "explain_ms")
		if !ok1 || !ok2 {
			continue
		}
		p("- %s %s, in its plan below: the worker executed the shard query in %s ms, the coordinator's whole statement took %s ms (plain PostgreSQL: %s ms).\n",
			w, s, num(worker), num(coord), r.cell(pl+"explain_ms"))
	}
	p("\n")

	p("## How it would scale with workers\n\n")
	p("This run does not measure scale-out: %s workers share one machine with everything else, so adding work to the workers takes it from the same cores. ", r.cell("citus.workers"))
	p("What it does measure is the cost per request on each side, and that is what decides the scaling of router queries:\n\n")
	p("- **The workers' part scales out.** Each tenant's rows sit in one shard group on one worker; with workers on their own machines, ")
	p("the workers' CPU per request above is spread over them, and more workers (with the shards rebalanced onto them) add capacity for it, ")
	p("as long as tenants' load is spread (a hot tenant stays on one worker: tenant isolation, `isolate_tenant_to_new_shard`, moves it to its own).\n")
	p("- **The coordinator's part does not.** Every request passes through the coordinator, so its CPU per request sets a ceiling of about ")
	p("1000 ÷ (coordinator CPU ms/req) requests per second per coordinator core, however many workers there are:\n\n")
	for _, run := range r.citusRuns() {
		w, s, pl, c := run.workload, run.strategy, run.plain, run.citus
		coord, ok := r.Get(c + "coordinator_cpu_ms_per_req")
		plain, ok2 := r.Get(pl + "db_cpu_ms_per_req")
		if !ok || coord <= 0 || !ok2 || plain <= 0 {
			continue
		}
		p("  - %s %s: about %s req/s per coordinator core (plain PostgreSQL: about %s req/s per core for the whole query).\n", w, s, num(1000/coord), num(1000/plain))
	}
	p("\n  These are derived from one run's CPU accounting, not measured ceilings. Where the coordinator's share of the Citus CPU is high, ")
	p("the coordinator is most of the work and adding workers buys little; where the workers' share is high, the work scales out")
	lo, hi := "", ""
	for _, run := range r.citusRuns() {
		key := run.citus + "coordinator_cpu_share"
		v, ok := r.Get(key)
		if !ok {
			continue
		}
		if lo == "" || v < r.Figures[lo] {
			lo = key
		}
		if hi == "" || v > r.Figures[hi] {
			hi = key
		}
	}
	if lo != "" {
		name := func(key string) string {
			return strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(key, citusPrefix), ".coordinator_cpu_share"), ".", " ")
		}
		p(" (in this run the coordinator's share was highest for %s, %s, and lowest for %s, %s)", name(hi), r.cell(hi), name(lo), r.cell(lo))
	}
	p(". Citus can also take router queries on any worker (the metadata is synced to them), ")
	p("which spreads the coordinator's part; the harness does not try it.\n")
	p("- **Latency** gains a network round trip per statement (and per BEGIN/COMMIT carried over) once the workers are on other machines: ")
	p("a few tenths of a millisecond each within a data centre, on top of the ratios above; more workers do not change it for router queries.\n\n")
	p("Not measured: workers on their own machines and a real network; more than %s workers; multi-shard queries (none of these workloads makes one: ", r.cell("citus.workers"))
	p("a query without the tenant filter is the case where a statement fans out to every shard, and its cost grows with the shard count); ")
	p("queries routed through the workers; PgBouncer in front of the coordinator; shard moves or rebalancing under load; a managed Citus service.\n\n")

	writePlans(&b, r, "`EXPLAIN (ANALYZE, BUFFERS)` of the store's queries for the first large tenant, after the runs, as the server runs them "+
		"(the serving role inside the strategy's transaction), literals in place of parameters.")
	writeRun(&b, r)
	return b.String()
}
