package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/bench/harness"
)

// TestSmoke runs the whole harness at a tiny size — its own cluster, every
// strategy and workload, one short round — and checks that it works and
// writes the three files. It asserts no timing: only that every figure the
// report is made of is there, no request of the common-rate runs failed,
// and the database strategy stayed within its connection budget.
func TestSmoke(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	var stderr bytes.Buffer
	code := run([]string{
		"-out", out, "-q",
		"-tenants", "6", "-large", "1", "-large-rows", "3000", "-small-rows", "50", "-settle=false",
		"-rounds", "1", "-duration", "300ms", "-fixed-duration", "300ms", "-warmup", "0s",
		"-budget", "4", "-hot-tenants", "3", "-app-conns", "4", "-workers", "2", "-parallel", "2", "-provision-sample", "2",
		"-noisy-duration", "300ms", "-noisy-rate", "20", "-noisy-idle", "100",
		"-focus-rows", "3000",
	}, &stderr)
	if code != 0 {
		t.Fatalf("bench exited %d: %s", code, stderr.String())
	}

	var figures map[string]any
	if err := json.Unmarshal(readFile(t, out, "latest.json"), &figures); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	// The pgbench anchors, and every strategy against them.
	for _, name := range []string{"pgbench.point_read.throughput_rps", "pgbench_connect.point_read.throughput_rps",
		"pgbench.cost_summary.throughput_rps", "rls.point_read.throughput_vs_pgbench",
		"database.point_read.throughput_vs_pgbench_connect", "schema.cost_summary.throughput_vs_pgbench"} {
		if v, ok := figures[name].(float64); !ok || v <= 0 {
			t.Errorf("latest.json: %s = %v, want a positive number", name, figures[name])
		}
	}
	machine, _ := figures["machine"].(map[string]any)
	if v, _ := machine["postgresql"].(string); v == "" {
		t.Errorf("latest.json: machine has no PostgreSQL version: %v", machine)
	}
	for _, s := range harness.Strategies {
		for _, w := range harness.Workloads {
			for _, m := range []string{"throughput_rps", "p50_ms", "p99_ms"} {
				if v, ok := figures[s+"."+w+"."+m].(float64); !ok || v <= 0 {
					t.Errorf("latest.json: %s.%s.%s = %v, want a positive number", s, w, m, figures[s+"."+w+"."+m])
				}
			}
			if v := figures[s+"."+w+".errors"]; v != 0.0 {
				t.Errorf("latest.json: %s.%s.errors = %v, want 0", s, w, v)
			}
			if s != harness.Baseline {
				if _, ok := figures[s+"."+w+".p99_ratio"].(float64); !ok {
					t.Errorf("latest.json: no %s.%s.p99_ratio", s, w)
				}
			}
			for _, m := range []string{"p99_samples", "own_rate_rps", "own_p99_ms", "own_p99_samples", "own_answered_share"} {
				if v, ok := figures[s+"."+w+"."+m].(float64); !ok || v <= 0 {
					t.Errorf("latest.json: %s.%s.%s = %v, want a positive number", s, w, m, figures[s+"."+w+"."+m])
				}
			}
		}
	}
	for _, s := range []string{harness.RLS, harness.Schema, harness.Database} {
		for _, m := range []string{"focus_ingest.rows_per_s", "focus_ingest.copy_rows_per_s", "focus_ingest.vs_copy",
			"focus_summary_service.ratio", "focus_summary_tag.ratio"} {
			if v, ok := figures[s+"."+m].(float64); !ok || v <= 0 {
				t.Errorf("latest.json: %s.%s = %v, want a positive number", s, m, figures[s+"."+m])
			}
		}
		if _, ok := figures[s+".focus_ingest.rss_growth_mb"].(float64); !ok {
			t.Errorf("latest.json: no %s.focus_ingest.rss_growth_mb", s)
		}
		if _, ok := figures["target."+s+"_focus_ingest_vs_copy.met"]; !ok {
			t.Errorf("latest.json: no target %s_focus_ingest_vs_copy", s)
		}
	}
	for _, name := range []string{"schema.migrate_all_s", "database.migrate_all_s", "rls.provision_ms", "schema.provision_ms", "database.provision_ms"} {
		if _, ok := figures[name].(float64); !ok {
			t.Errorf("latest.json: no %s", name)
		}
	}
	// The migration anchor, and migrate held to it.
	for _, s := range []string{harness.Schema, harness.Database} {
		for _, m := range []string{"migrate_script_before_s", "migrate_script_after_s", "migrate_script_s", "migrate_vs_script", "migrate_goose_s", "migrate_noop_s"} {
			if v, ok := figures[s+"."+m].(float64); !ok || v <= 0 {
				t.Errorf("latest.json: %s.%s = %v, want a positive number", s, m, figures[s+"."+m])
			}
		}
		if _, ok := figures["target."+s+"_migrate_vs_script.met"]; !ok {
			t.Errorf("latest.json: no target %s_migrate_vs_script", s)
		}
	}
	if n := figures["schema.migrate_all_tenants"]; n != 6.0 {
		t.Errorf("latest.json: schema.migrate_all_tenants = %v, want 6", n)
	}
	peak, ok := figures["database.peak_connections"].(float64)
	if !ok || peak < 1 || peak > 4 {
		t.Errorf("latest.json: database.peak_connections = %v, want 1 to the budget of 4", figures["database.peak_connections"])
	}
	if met := figures["target.database_peak_connections.met"]; met != true {
		t.Errorf("latest.json: target.database_peak_connections.met = %v, want true", met)
	}

	// The hot-set runs: the database strategy against RLS with the active
	// tenants within the budget, every figure there and none failed.
	if n := figures["hot.tenants"]; n != 3.0 {
		t.Errorf("latest.json: hot.tenants = %v, want 3", n)
	}
	for _, w := range harness.Workloads {
		for _, name := range []string{"rls." + w + ".hot_p99_ms", "database." + w + ".hot_p50_ms", "database." + w + ".hot_p99_ms",
			"database." + w + ".hot_p99_vs_rls", "database." + w + ".hot_p99_samples",
			"rls." + w + ".hot_throughput_rps", "database." + w + ".hot_throughput_rps", "hot." + w + ".rate_rps"} {
			if v, ok := figures[name].(float64); !ok || v <= 0 {
				t.Errorf("latest.json: %s = %v, want a positive number", name, figures[name])
			}
		}
		if hot, common := figures["hot."+w+".rate_rps"].(float64), figures[w+".fixed_rate_rps"].(float64); hot < common {
			t.Errorf("latest.json: the hot set's %s rate %v is below the common rate %v", w, hot, common)
		}
		// Failed requests are counted, not forbidden: the hot set runs at
		// half of a saturation measured on a machine shared with the rest
		// of the suite, and with 3 tenants on a budget of 4 a busy
		// tenant's requests past its connections meet the load walls
		// (429, or 503 after the acquire timeout) by design.
		if _, ok := figures["database."+w+".hot_errors"].(float64); !ok {
			t.Errorf("latest.json: no database.%s.hot_errors", w)
		}
		if _, ok := figures["target.hot_database_"+w+"_p99_vs_rls.met"]; !ok {
			t.Errorf("latest.json: no target hot_database_%s_p99_vs_rls", w)
		}
	}
	if _, ok := figures["database.hot_dials"].(float64); !ok {
		t.Errorf("latest.json: no database.hot_dials")
	}

	// The noisy-neighbour workload: every figure there, and the flooder
	// never answered 500.
	for _, s := range harness.Strategies[1:] {
		for _, name := range []string{"quiet.p50_ms", "quiet.p99_ms", "metrics_bytes_before", "metrics_bytes_after", "metrics_growth", "rss_mb_after"} {
			if v, ok := figures["noisy."+s+"."+name].(float64); !ok || v <= 0 {
				t.Errorf("latest.json: noisy.%s.%s = %v, want a positive number", s, name, figures["noisy."+s+"."+name])
			}
		}
		for _, a := range harness.Attacks {
			prefix := "noisy." + s + "." + a
			for _, name := range []string{".p50_ms", ".p99_ms", ".p99_vs_quiet"} {
				if v, ok := figures[prefix+name].(float64); !ok || v <= 0 {
					t.Errorf("latest.json: %s%s = %v, want a positive number", prefix, name, figures[prefix+name])
				}
			}
			if v := figures[prefix+".flooder_500"]; v != 0.0 {
				t.Errorf("latest.json: %s.flooder_500 = %v, want 0", prefix, v)
			}
		}
	}

	md := string(readFile(t, out, "latest.md"))
	for _, want := range []string{"## Targets", "### point_read", "| baseline |", "| database |", "## Database strategy connections", "## Noisy neighbour"} {
		if !strings.Contains(md, want) {
			t.Errorf("latest.md has no %q", want)
		}
	}

	svg := readFile(t, out, "latest.svg")
	if err := wellFormed(svg); err != nil {
		t.Errorf("latest.svg is not well-formed XML: %v", err)
	}
	if !bytes.Contains(svg, []byte("<rect")) {
		t.Errorf("latest.svg draws no bar")
	}
}

// TestFlags checks that bad flags exit 2 without starting anything.
func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-strategies", "sharding"},
		{"-tenants", "0"},
		{"-rate-share", "2"},
		{"-noisy-rate", "0"},
		{"-citus", "-strategies", "database"},
		{"-citus", "-noisy"},
		{"-citus", "-citus-workers", "0"},
		{"extra"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("bench %q exited %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wellFormed reports whether b parses as XML to its end.
func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
