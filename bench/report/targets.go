package report

import (
	"fmt"
	"slices"
)

// Workload and strategy names the targets refer to (the harness's).
const (
	pointRead = "point_read"
	ingest    = "ingest"
)

// noisyAttacks are the harness's noisy-neighbour attacks, in report order.
var noisyAttacks = []string{"summaries", "same_key_ingest", "idle_flood"}

// noisyText says what each attack is, in a few words.
var noisyText = map[string]string{
	"summaries":       "64 concurrent month summaries",
	"same_key_ingest": "45 same-key ingests behind a long one",
	"idle_flood":      "idle connections and a made-up-method flood",
}

// Target is one of the targets, evaluated on a run.
type Target struct {
	// Name is the target's key in latest.json (target.<Name>.met).
	Name string
	// Text says what is measured against what, for the report.
	Text string
	// Measured and Limit: met when Measured <= Limit (AtLeast false) or
	// Measured >= Limit (AtLeast true).
	Measured, Limit float64
	AtLeast         bool
	Unit            string
	// Known is false when the run did not measure it (a strategy or
	// workload not selected).
	Known, Met bool
	// Min and Max are the lowest and highest round's value of a ratio
	// (Spread false when the run has no such figures): how far one
	// round is to be trusted.
	Min, Max float64
	Spread   bool
}

// Evaluate evaluates the targets on r. Latency ratios are medians
// over rounds of each round's ratio; read latency is judged on p50, the
// quantile a few hundred requests per run resolve to a per cent or two.
func Evaluate(r *Results) []Target {
	var out []Target
	add := func(name, text, figure string, limit float64, atLeast bool, unit string) {
		t := Target{Name: name, Text: text, Limit: limit, AtLeast: atLeast, Unit: unit}
		t.Measured, t.Known = r.Get(figure)
		lo, okLo := r.Get(figure + "_min")
		hi, okHi := r.Get(figure + "_max")
		t.Min, t.Max, t.Spread = lo, hi, okLo && okHi
		if t.Known {
			t.Met = t.Measured <= limit
			if atLeast {
				t.Met = t.Measured >= limit
			}
		}
		out = append(out, t)
	}
	for _, w := range r.Workloads {
		if w == ingest {
			add("rls_ingest_p50_vs_baseline", "RLS ingest p50 latency ≤ 1.03× baseline",
				"rls.ingest.p50_ratio", 1.03, false, "×")
			continue
		}
		add("rls_"+w+"_p50_vs_baseline", fmt.Sprintf("RLS read latency ≤ 1.02× baseline: %s p50", w),
			"rls."+w+".p50_ratio", 1.02, false, "×")
	}
	if slices.Contains(r.Workloads, pointRead) {
		add("rls_point_read_throughput_vs_baseline", "Tenant-scoped point read throughput ≥ 0.95× the same read without tenancy (RLS)",
			"rls.point_read.throughput_ratio", 0.95, true, "×")
	}
	tenants, _ := r.Get("dataset.tenants")
	for _, w := range r.Workloads {
		add("schema_"+w+"_p50_vs_rls", fmt.Sprintf("Schema ≤ 1.10× RLS latency at %.0f tenants: %s p50", tenants, w),
			"schema."+w+".p50_vs_rls", 1.10, false, "×")
	}
	// A run without the database strategy, or without its hot set, names
	// no budget or active set: its rows say "not measured".
	budget, measured := r.Get("database.connection_budget")
	under := "its connection budget"
	if measured {
		under = fmt.Sprintf("a %.0f-connection budget", budget)
	}
	for _, w := range r.Workloads {
		add("database_"+w+"_p99_vs_rls", fmt.Sprintf("Database p99 ≤ 2× RLS under %s: %s", under, w),
			"database."+w+".p99_vs_rls", 2, false, "×")
	}
	fit := ""
	if hot, ok := r.Get("hot.tenants"); ok && measured {
		fit = fmt.Sprintf(" (%.0f active, %.0f connections)", hot, budget)
	}
	for _, w := range r.Workloads {
		add("hot_database_"+w+"_p99_vs_rls", fmt.Sprintf("Database p99 ≤ 1.5× RLS while the active tenants fit the budget%s: %s", fit, w),
			"database."+w+".hot_p99_vs_rls", 1.5, false, "×")
	}
	add("database_peak_connections", "Database strategy never above its connection budget (peak tenant sessions in pg_stat_activity)",
		"database.peak_connections", budget, false, "")
	for _, s := range r.Strategies {
		if _, ok := r.Get("noisy." + s + ".quiet.p99_ms"); !ok {
			continue
		}
		for _, a := range noisyAttacks {
			add("noisy_"+s+"_"+a+"_p99_vs_quiet", fmt.Sprintf("Victim p99 under %s ≤ 2× its quiet p99 (%s)", noisyText[a], s),
				"noisy."+s+"."+a+".p99_vs_quiet", 2, false, "×")
			add("noisy_"+s+"_"+a+"_flooder_500", fmt.Sprintf("The flooder of %s gets 429/409, never 500 (%s)", noisyText[a], s),
				"noisy."+s+"."+a+".flooder_500", 0, false, "")
		}
		add("noisy_"+s+"_metrics_growth", fmt.Sprintf("/metrics size after the made-up-method flood ≤ 1.1× before (%s)", s),
			"noisy."+s+".metrics_growth", 1.1, false, "×")
	}
	n, _ := r.Get("schema.migrate_all_tenants")
	add("schema_migrate_all_s", fmt.Sprintf("Migrate %.0f tenant schemas ≤ 60 s", n),
		"schema.migrate_all_s", 60, false, "s")
	for _, s := range []string{"schema", "database"} {
		if _, ok := r.Get(s + ".migrate_vs_script"); !ok {
			continue
		}
		n, _ := r.Get(s + ".migrate_all_tenants")
		add(s+"_migrate_vs_script", fmt.Sprintf("Migrate %.0f tenant %ss ≤ 1.5× the same DDL as plain psql scripts into as many fresh ones (measured once per run)", n, s),
			s+".migrate_vs_script", 1.5, false, "×")
	}
	rows, _ := r.Get("focus.rows")
	for _, s := range r.Strategies {
		if _, ok := r.Get(s + ".focus_ingest.vs_copy"); !ok {
			continue
		}
		add(s+"_focus_ingest_vs_copy", fmt.Sprintf("%s: a %.0f-row FOCUS export through HTTP ≥ 0.5× COPY of the same rows", s, rows),
			s+".focus_ingest.vs_copy", 0.5, true, "×")
		add(s+"_focus_ingest_rss_mb", fmt.Sprintf("%s: peak RSS growth while loading it ≤ 200 MB", s),
			s+".focus_ingest.rss_growth_mb", 200, false, "MB")
		add(s+"_focus_summary_service", fmt.Sprintf("%s: a month of it by service through HTTP ≤ 1.5× the query run directly", s),
			s+".focus_summary_service.ratio", 1.5, false, "×")
		add(s+"_focus_summary_tag", fmt.Sprintf("%s: a month of it by tag through HTTP ≤ 1.5× the query run directly", s),
			s+".focus_summary_tag.ratio", 1.5, false, "×")
	}
	return out
}
