package report

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Markdown is latest.md: the targets marked met or missed (with why, for
// those missed), a table per workload, provisioning and migration times,
// the database strategy's connections, and how the run was made.
func Markdown(r *Results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := r.Machine
	p("# What isolation costs\n\n")
	p("`make bench`, %s, on %s (%d cores, %.0f GiB), %s, Go %s, PostgreSQL %s; load average %.2f when the run began (the machine is shared).\n\n",
		time.Now().UTC().Format("2006-01-02"), m.CPU, m.Cores, m.MemoryGiB, m.OS, strings.TrimPrefix(m.Go, "go"), m.PostgreSQL, m.LoadAvg)
	p("Every figure is the median over rounds; a ratio is the median of each round's ratio to the baseline run in the same round ")
	p("(the baseline is the RLS database with Row-Level Security disabled and no tenant bound: only the application's `tenant_id = $1` filter is left; ")
	p("its transactions carry the server's bounds and no move fence, and a one-statement read is one round trip, as the strategies' are). ")
	p("Throughput is at saturation; latency at a fixed rate below every strategy's saturation.\n\n")

	targets := Evaluate(r)
	p("## Targets\n\n| target | measured | lowest–highest round | limit | |\n|---|---:|---:|---:|---|\n")
	missed := map[string]bool{}
	for _, t := range targets {
		op := "≤"
		if t.AtLeast {
			op = "≥"
		}
		verdict, measured := "not measured", "–"
		if t.Known {
			measured = num(t.Measured) + t.Unit
			verdict = "met"
			if !t.Met {
				verdict = "**missed**"
				missed[t.Name] = true
			}
		}
		spread := "–"
		if t.Spread {
			spread = num(t.Min) + "–" + num(t.Max)
		}
		p("| %s | %s | %s | %s %s%s | %s |\n", t.Text, measured, spread, op, num(t.Limit), t.Unit, verdict)
	}
	p("\n")
	if notes := explain(missed); notes != "" {
		p("### Why the missed targets are missed\n\n%s\n\n", notes)
	}

	p("## Per workload\n\n")
	for _, w := range r.Workloads {
		rate, _ := r.Get(w + ".fixed_rate_rps")
		p("### %s\n\n%s Latency at %s req/s.\n\n", w, workloadText[w], num(rate))
		p("| strategy | req/s at saturation | × baseline | × pgbench (lowest–highest round) | p50 ms | × baseline | p99 ms | × baseline | p99 samples | p50 × RLS | p99 × RLS | at own rate: req/s | p50 ms | p99 ms | p99 samples | failed requests |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Strategies {
			f := func(measure string) string { return r.cell(s + "." + w + "." + measure) }
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s,
				f("throughput_rps"), f("throughput_ratio"), r.ratioCell(s+"."+w+".throughput_vs_pgbench"), f("p50_ms"), f("p50_ratio"), f("p99_ms"), f("p99_ratio"),
				f("p99_samples"), f("p50_vs_rls"), f("p99_vs_rls"),
				r.ownRateCell(s+"."+w), f("own_p50_ms"), f("own_p99_ms"), f("own_p99_samples"), f("errors"))
		}
		p("\n")
		if tps, ok := r.Get("pgbench." + w + ".throughput_rps"); ok {
			p("pgbench, the same statement as one prepared statement in autocommit on the baseline's database of the same server: %s tps.", num(tps))
			if c, ok := r.Get("pgbench_connect." + w + ".throughput_rps"); ok {
				p(" With a new connection per transaction (`-C`, the backend-start limit): %s tps; the database strategy at %s× of it.",
					num(c), r.cell("database."+w+".throughput_vs_pgbench_connect"))
			}
			p("\n\n")
		}
		writeCPU(&b, r, w)
	}

	p("## Provisioning and migration\n\n")
	p("| strategy | provision one tenant, median ms | slowest of the sample, ms | provision all tenants, s | migrate all tenants from version 0, s | the same DDL as psql scripts, s | migrate ÷ scripts | goose alone, s | migrate with nothing to do, s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Strategies {
		if s == "baseline" {
			continue
		}
		f := func(measure string) string { return r.cell(s + "." + measure) }
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, f("provision_ms"), f("provision_max_ms"), f("provision_all_s"), f("migrate_all_s"),
			f("migrate_script_s"), f("migrate_vs_script"), f("migrate_goose_s"), f("migrate_noop_s"))
	}
	p("\nProvisioning goes through the control plane as `bulkhead tenant create` does: the tenant's record, its storage at the migration head, and its audit entry. ")
	p("rls has no storage of its own to make; schema creates a role and a schema and migrates it; database clones a database from the pre-migrated template.\n\n")
	p("Migrating is timed as `bulkhead migrate` runs it (the control plane's `Migrate`, isolation.migrate_parallelism tenants at a time) on every tenant taken back to version 0. ")
	p("Its anchor, in the same run and on the same server: the Up part of the same tenant migration files, read from the embedded files into one plain SQL script ")
	p("(goose's transactional migrations each between BEGIN and COMMIT, the NO TRANSACTION one in autocommit), applied by psql as the owner role to as many fresh schemas (search_path set to each) ")
	p("or fresh databases (`\\connect` to each) as there are tenants, by as many psql processes as the migrate parallelism, each taking an equal share. Untimed around each pass: fresh schemas are made before it and kept until the last pass (goose alone, below), then all dropped; fresh databases are made once, before the first pass, emptied between passes (their filled public schema renamed, kept, and an empty one made) and dropped after the last. ")
	p("Dropped relations' files are unlinked at a checkpoint, and some file systems make creating files slow for minutes after many were removed: the reset is followed by a checkpoint and, there, a wait (settings: before timed migrations), so that no timed migration phase pays for the drops of another. ")
	p("The scripts are timed right before migrate and right after it, and the faster of the two is the anchor: ")
	for _, s := range []string{"schema", "database"} {
		if _, ok := r.Get(s + ".migrate_script_before_s"); ok {
			p("%s %s s before, %s s after; ", s, r.cell(s+".migrate_script_before_s"), r.cell(s+".migrate_script_after_s"))
		}
	}
	p("measured once per run, not per round. ")
	p("Goose alone is the diagnosis between the two: goose as the strategies run it, acting as the owner, with its version table and session lock (into schemas on owner sessions kept from one schema to the next, `isolation.Migrators`; into databases on a connection of each database's own, `isolation.MigrateTenantTables`), into as many fresh schemas or databases, ")
	p("as many at a time, without the control plane's bookkeeping, the version check and the grants of the strategies' migrate. ")
	p("Migrate with nothing to do is a second `Migrate` right after: the control plane, the strategies' setup and the status read, the fixed part of the first.\n\n")

	if peak, ok := r.Get("database.peak_connections"); ok {
		budget, _ := r.Get("database.connection_budget")
		p("## Database strategy connections\n\n")
		p("Peak serving-role sessions on tenant databases, sampled from `pg_stat_activity` every 50 ms through every run (%s samples): **%s** against a budget of %s. ",
			r.cell("database.connection_samples"), num(peak), num(budget))
		p("The strategy's own count of open tenant connections peaked at %s. ", r.cell("database.pool_high_water"))
		p("Opening a serving connection to a tenant database and answering its first query took %s ms (median of 20 small tenants): ", r.cell("database.connect_ms"))
		p("what a request pays when its tenant has no open connection.\n\n")
	}

	if hot, ok := r.Get("hot.tenants"); ok {
		p("## Database strategy, active tenants within the budget\n\n")
		p("The same requests to only %s of the tenants, the large ones among them, ", num(hot))
		p("fewer than the database strategy's budget of %s connections, on the database strategy and on RLS in turn. ", r.cell("database.connection_budget"))
		p("A warm-up at saturation opens the hot tenants' connections first; a run at saturation of each sets the rate, a share of the lower of the two throughputs (settings: hot set; never below the workload's common rate of the tables above). ")
		p("Connections the database strategy dialled during the timed runs, each a cold start: %s, for %s requests.\n\n", r.cell("database.hot_dials"), r.cell("database.hot_requests"))
		p("| workload | RLS saturation req/s | database saturation req/s | rate req/s | RLS p50 ms | RLS p99 ms | database p50 ms | database p99 ms | p50 × RLS | p99 × RLS (lowest–highest round) | p99 samples | failed requests |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range r.Workloads {
			f := func(s, measure string) string { return r.cell(s + "." + w + "." + measure) }
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, f("rls", "hot_throughput_rps"), f("database", "hot_throughput_rps"), r.cell("hot."+w+".rate_rps"),
				f("rls", "hot_p50_ms"), f("rls", "hot_p99_ms"), f("database", "hot_p50_ms"), f("database", "hot_p99_ms"),
				f("database", "hot_p50_vs_rls"), r.ratioCell("database."+w+".hot_p99_vs_rls"), f("database", "hot_p99_samples"), f("database", "hot_errors"))
		}
		p("\n")
	}

	if _, ok := r.Get("noisy.victim_rate_rps"); ok {
		p("## Noisy neighbour\n\n")
		p("A small tenant's point reads (`GET /v1/accounts/{id}`) at %s req/s, alone and then under each attack of another tenant or of clients without a key ", r.cell("noisy.victim_rate_rps"))
		p("(%s idle connections for the last). The servers keep the product's default load walls, but no per-key rate limit.\n\n", r.cell("noisy.idle_connections"))
		p("| strategy | attack | victim p50 ms | victim p99 ms | p99 × quiet | victim failed | flooder's answers | RSS MiB |\n|---|---|---:|---:|---:|---:|---|---:|\n")
		var noisy []string
		for _, s := range r.Strategies {
			if _, ok := r.Get("noisy." + s + ".quiet.p99_ms"); !ok {
				continue
			}
			noisy = append(noisy, s)
			p("| %s | quiet | %s | %s | 1 | – | – | %s |\n", s, r.cell("noisy."+s+".quiet.p50_ms"), r.cell("noisy."+s+".quiet.p99_ms"), r.cell("noisy."+s+".rss_mb_before"))
			for _, a := range noisyAttacks {
				f := "noisy." + s + "." + a
				p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", s, noisyText[a], r.cell(f+".p50_ms"), r.cell(f+".p99_ms"),
					r.cell(f+".p99_vs_quiet"), r.cell(f+".victim_failed"), r.codes(f+".flooder."), r.cell(f+".rss_mb"))
			}
		}
		p("\n`/metrics` around the flood of made-up methods:\n\n| strategy | bytes before | bytes after | × before |\n|---|---:|---:|---:|\n")
		for _, s := range noisy {
			p("| %s | %s | %s | %s |\n", s, r.cell("noisy."+s+".metrics_bytes_before"), r.cell("noisy."+s+".metrics_bytes_after"), r.cell("noisy."+s+".metrics_growth"))
		}
		p("\n")
	}

	writePlans(&b, r, "`EXPLAIN (ANALYZE, BUFFERS)` of the store's queries for the first large tenant, after the runs, as the server runs them: "+
		"the serving role inside each strategy's transaction (the baseline's: a plain one), literals in place of parameters.")
	writeRun(&b, r)
	return b.String()
}

// writePlans writes the Plans section, introduced by intro, when r has
// plans.
func writePlans(b *strings.Builder, r *Results, intro string) {
	if len(r.Plans) == 0 {
		return
	}
	fmt.Fprintf(b, "## Plans\n\n%s\n\n", intro)
	for _, k := range sortedKeys(r.Plans) {
		fmt.Fprintf(b, "<details><summary>%s</summary>\n\n```\n%s\n```\n\n</details>\n\n", k, r.Plans[k])
	}
}

// writeRun writes the section on how the run was made: its settings and
// the harness's phases.
func writeRun(b *strings.Builder, r *Results) {
	b.WriteString("## How this run was made\n\n")
	for _, k := range sortedKeys(r.Settings) {
		fmt.Fprintf(b, "- %s: %s\n", k, r.Settings[k])
	}
	b.WriteString("\nHarness phases (s):")
	for _, k := range sortedKeys(r.Figures) {
		if name, ok := strings.CutPrefix(k, "phase."); ok {
			fmt.Fprintf(b, " %s %s;", strings.TrimSuffix(name, "_s"), num(r.Figures[k]))
		}
	}
	b.WriteString("\n")
}

// writeCPU writes workload w's CPU time per request at saturation, when
// the run measured it: the database server's and this process's (the
// Bulkhead servers and the load generator), each beside the baseline's.
func writeCPU(b *strings.Builder, r *Results, w string) {
	if _, ok := r.Get(r.Strategies[0] + "." + w + ".db_cpu_ms_per_req"); !ok {
		return
	}
	b.WriteString("CPU time per request over the saturation runs of every round, from /proc: the database server's (the postmaster and its children), and that of the bench process, which runs the Bulkhead servers and the load generator.\n\n")
	b.WriteString("| strategy | database server µs | × baseline | servers and load generator µs | × baseline | together µs | × baseline |\n|---|---:|---:|---:|---:|---:|---:|\n")
	us := func(s, measure string) (float64, bool) {
		v, ok := r.Get(s + "." + w + "." + measure)
		return v * 1000, ok
	}
	bdb, okb1 := us("baseline", "db_cpu_ms_per_req")
	bself, okb2 := us("baseline", "bench_cpu_ms_per_req")
	base := []float64{bdb, bself, bdb + bself}
	for _, s := range r.Strategies {
		db, ok1 := us(s, "db_cpu_ms_per_req")
		self, ok2 := us(s, "bench_cpu_ms_per_req")
		if !ok1 || !ok2 {
			continue
		}
		fmt.Fprintf(b, "| %s", s)
		for i, c := range []float64{db, self, db + self} {
			ratio := "–"
			if okb1 && okb2 && s != "baseline" && base[i] > 0 {
				ratio = num(c / base[i])
			}
			fmt.Fprintf(b, " | %s | %s", num(c), ratio)
		}
		b.WriteString(" |\n")
	}
	b.WriteString("\n")
}

// workloadText says what each workload requests.
var workloadText = map[string]string{
	"point_read":    "`GET /v1/accounts/{id}`: one account by primary key.",
	"cost_list":     "`GET /v1/costs?from&to&limit=100`: the first page of one month's cost items (keyset on usage date and id).",
	"cost_summary":  "`GET /v1/costs/summary?group_by=service&from&to`: one month's costs totalled per service.",
	"ingest":        "`POST /v1/costs`: 1,000 cost items as JSON, all or nothing.",
	"budget_status": "`GET /v1/budgets/{id}`: one budget with what was spent in its current month.",
}

// codes lists the figures under prefix (status codes) as "429: 120, 409: 45".
func (r *Results) codes(prefix string) string {
	var parts []string
	for _, k := range sortedKeys(r.Figures) {
		if code, ok := strings.CutPrefix(k, prefix); ok {
			parts = append(parts, code+": "+num(r.Figures[k]))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// ratioCell is a ratio's cell with its lowest–highest round, when the
// run had those.
func (r *Results) ratioCell(name string) string {
	c := r.cell(name)
	if _, ok := r.Get(name + "_min"); ok {
		c += " (" + r.cell(name+"_min") + "–" + r.cell(name+"_max") + ")"
	}
	return c
}

// cell formats a figure for a table, "–" when it was not measured.
func (r *Results) cell(name string) string {
	v, ok := r.Get(name)
	if !ok {
		return "–"
	}
	return num(v)
}

// num formats v with three significant digits, without exponent.
func num(v float64) string {
	switch a := math.Abs(v); {
	case v == math.Trunc(v) && a < 1e7:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// ownRateCell is the rate of prefix's own-rate runs, marked when some round
// answered less than 90 % of the requests the rate sent in time: that
// round queued, and its latencies are the queue's.
func (r *Results) ownRateCell(prefix string) string {
	cell := r.cell(prefix + ".own_rate_rps")
	if share, ok := r.Get(prefix + ".own_answered_share"); ok && share < 0.9 {
		cell += fmt.Sprintf(" (queued: %.0f %% answered)", share*100)
	}
	return cell
}
