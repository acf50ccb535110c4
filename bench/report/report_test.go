package report

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func results() *Results {
	return &Results{
		Strategies: []string{"baseline", "rls", "schema", "database"},
		Workloads:  []string{"point_read", "ingest"},
		Figures: map[string]float64{
			"dataset.tenants":                 1000,
			"rls.point_read.p50_ratio":        1.01,
			"rls.point_read.p50_ratio_min":    0.97,
			"rls.point_read.p50_ratio_max":    1.04,
			"rls.ingest.p50_ratio":            1.05,
			"rls.point_read.throughput_ratio": 0.99,
			"schema.point_read.p50_vs_rls":    1.2,
			"database.peak_connections":       51,
			"database.connection_budget":      50,
			"schema.migrate_all_s":            30,
			"schema.migrate_all_tenants":      1000,
			"schema.migrate_vs_script":        1.2,
			"database.migrate_all_tenants":    1000,
			"database.migrate_vs_script":      2.5,
			"database.point_read.p99_vs_rls":  math.NaN(), // not measured
		},
	}
}

// TestEvaluate checks each kind of target: at most, at least, a budget
// read from the figures, and a figure that was not measured.
func TestEvaluate(t *testing.T) {
	t.Parallel()
	got := map[string]Target{}
	for _, tg := range Evaluate(results()) {
		got[tg.Name] = tg
	}
	for name, want := range map[string]struct{ known, met bool }{
		"rls_point_read_p50_vs_baseline":        {true, true},
		"rls_ingest_p50_vs_baseline":            {true, false},
		"rls_point_read_throughput_vs_baseline": {true, true},
		"schema_point_read_p50_vs_rls":          {true, false},
		"database_peak_connections":             {true, false},
		"schema_migrate_all_s":                  {true, true},
		"schema_migrate_vs_script":              {true, true},
		"database_migrate_vs_script":            {true, false},
		"database_point_read_p99_vs_rls":        {false, false},
	} {
		tg, ok := got[name]
		if !ok {
			t.Errorf("no target %s", name)
			continue
		}
		if tg.Known != want.known || tg.Met != want.met {
			t.Errorf("%s: known %v met %v, want %v %v", name, tg.Known, tg.Met, want.known, want.met)
		}
	}
	if tg := got["rls_point_read_p50_vs_baseline"]; !tg.Spread || tg.Min != 0.97 || tg.Max != 1.04 {
		t.Errorf("rls point read spread: %+v, want 0.97–1.04", tg)
	}
}

// TestExplain checks that a missed target gets the explanation with the
// longest matching prefix, each explanation at most once.
func TestExplain(t *testing.T) {
	t.Parallel()
	got := explain(map[string]bool{"database_peak_connections": true, "schema_point_read_p50_vs_rls": true, "schema_ingest_p50_vs_rls": true})
	if !strings.Contains(got, "above the budget") || strings.Contains(got, "**Database against RLS.**") {
		t.Errorf("peak connections missed: explanation %q, want the budget's, not the latency one", got)
	}
	if n := strings.Count(got, "**Schema against RLS.**"); n != 1 {
		t.Errorf("schema explanation appears %d times, want once", n)
	}
	if got := explain(nil); got != "" {
		t.Errorf("nothing missed: explanation %q, want none", got)
	}
}

// TestJSON checks that latest.json is one flat object without the
// figures that were not measured, with the targets and the machine.
func TestJSON(t *testing.T) {
	t.Parallel()
	b, err := JSON(results())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["database.point_read.p99_vs_rls"]; ok {
		t.Error("a NaN figure was written")
	}
	if m["target.database_peak_connections.met"] != false || m["rls.point_read.p50_ratio"] != 1.01 {
		t.Errorf("figures: %v", m)
	}
	if _, ok := m["machine"].(map[string]any); !ok {
		t.Error("no machine object")
	}
}

// TestCitusMarkdown checks the Citus report: each ratio with its
// lowest–highest round, the CPU split, and the coordinator's ceiling
// derived from its CPU per request.
func TestCitusMarkdown(t *testing.T) {
	t.Parallel()
	r := &Results{
		Strategies: []string{"rls", "citus_rls"},
		Workloads:  []string{"point_read"},
		Figures: map[string]float64{
			"citus.workers": 2,
			"citus_rls.point_read.throughput_vs_plain":        0.3,
			"citus_rls.point_read.throughput_vs_plain_min":    0.25,
			"citus_rls.point_read.throughput_vs_plain_max":    0.35,
			"citus_rls.point_read.p50_vs_plain":               1.8,
			"rls.point_read.db_cpu_ms_per_req":                0.2,
			"citus_rls.point_read.coordinator_cpu_ms_per_req": 0.5,
			"citus_rls.point_read.workers_cpu_ms_per_req":     0.3,
			"citus_rls.point_read.coordinator_cpu_share":      0.625,
		},
	}
	md := CitusMarkdown(r)
	for _, want := range []string{
		"| point_read | rls | 0.300 (0.250–0.350) | 1.80 | – |",
		"0.200 ms of database CPU per request on plain PostgreSQL, 0.800 ms on Citus (coordinator 0.500 + workers 0.300), 4× as much",
		"point_read rls: about 2000 req/s per coordinator core (plain PostgreSQL: about 5000 req/s per core",
		"highest for rls point_read, 0.625",
		"more than 2 workers",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("citus markdown has no %q:\n%s", want, md)
		}
	}
}

// TestOwnRateQueued checks that an own-rate run that answered too little
// of its rate is marked as queued in the report, and one that kept up is
// not.
func TestOwnRateQueued(t *testing.T) {
	t.Parallel()
	r := results()
	r.Figures["rls.point_read.own_rate_rps"] = 5148
	r.Figures["rls.point_read.own_answered_share"] = 0.42
	r.Figures["schema.point_read.own_rate_rps"] = 3000
	r.Figures["schema.point_read.own_answered_share"] = 0.99
	if got := r.ownRateCell("rls.point_read"); !strings.Contains(got, "queued: 42 % answered") {
		t.Errorf("a run that answered 42 %% of its rate: %q", got)
	}
	if got := r.ownRateCell("schema.point_read"); strings.Contains(got, "queued") {
		t.Errorf("a run that kept up: %q", got)
	}
}

// TestCPUTable checks the CPU time per request of a workload: each side
// in microseconds beside the baseline's, and no table where the run did
// not measure it.
func TestCPUTable(t *testing.T) {
	t.Parallel()
	r := results()
	for k, v := range map[string]float64{
		"baseline.point_read.db_cpu_ms_per_req":    0.050,
		"baseline.point_read.bench_cpu_ms_per_req": 0.150,
		"rls.point_read.db_cpu_ms_per_req":         0.075,
		"rls.point_read.bench_cpu_ms_per_req":      0.150,
	} {
		r.Figures[k] = v
	}
	var b strings.Builder
	writeCPU(&b, r, "point_read")
	for _, want := range []string{
		"| baseline | 50 | – | 150 | – | 200 | – |",
		"| rls | 75 | 1.50 | 150 | 1 | 225 | 1.12 |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("CPU table has no %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "| schema |") {
		t.Errorf("a strategy without CPU figures has a row:\n%s", b.String())
	}
	b.Reset()
	writeCPU(&b, r, "ingest")
	if b.Len() != 0 {
		t.Errorf("a workload without CPU figures has a table:\n%s", b.String())
	}
}
