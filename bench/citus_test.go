//go:build citus

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/bench/harness"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

// TestCitusSmoke runs `bench -citus` at a tiny size — its own plain
// server and its own Citus coordinator with two workers, rls and schema on
// both, every workload, one short round — and checks that it writes
// citus-latest.{json,md} with every Citus/plain ratio, the database CPU
// per request on both sides, and router plans (one task per statement).
// It asserts no timing. Build tag citus: it needs Citus (`make
// deps/citus`), and runs in `make test/citus`.
func TestCitusSmoke(t *testing.T) {
	t.Parallel()
	if err := pgcluster.FindCitus(); err != nil {
		t.Fatalf("this test needs Citus: %v", err)
	}
	out := t.TempDir()
	var stderr bytes.Buffer
	code := run([]string{
		"-citus", "-out", out, "-q",
		"-tenants", "4", "-large", "1", "-large-rows", "2000", "-small-rows", "50", "-settle=false",
		"-rounds", "1", "-duration", "300ms", "-fixed-duration", "300ms", "-warmup", "0s",
		"-app-conns", "4", "-workers", "2", "-parallel", "2", "-provision-sample", "2",
	}, &stderr)
	if code != 0 {
		t.Fatalf("bench -citus exited %d: %s", code, stderr.String())
	}

	var figures map[string]any
	if err := json.Unmarshal(readFile(t, out, "citus-latest.json"), &figures); err != nil {
		t.Fatalf("citus-latest.json: %v", err)
	}
	machine, _ := figures["machine"].(map[string]any)
	if v, _ := machine["citus"].(string); v == "" {
		t.Errorf("citus-latest.json: machine has no Citus version: %v", machine)
	}
	positive := func(name string) {
		t.Helper()
		if v, ok := figures[name].(float64); !ok || v <= 0 {
			t.Errorf("citus-latest.json: %s = %v, want a positive number", name, figures[name])
		}
	}
	for _, s := range harness.CitusStrategies {
		c := harness.CitusPrefix + s
		for _, w := range harness.Workloads {
			for _, m := range []string{"throughput_rps", "p50_ms", "p99_ms"} {
				positive(s + "." + w + "." + m)
				positive(c + "." + w + "." + m)
			}
			for _, m := range []string{"throughput_vs_plain", "p50_vs_plain", "p99_vs_plain"} {
				positive(c + "." + w + "." + m)
			}
			positive(s + "." + w + ".db_cpu_ms_per_req")
			positive(c + "." + w + ".db_cpu_ms_per_req")
			if _, ok := figures[c+"."+w+".coordinator_cpu_share"].(float64); !ok {
				t.Errorf("citus-latest.json: no %s.%s.coordinator_cpu_share", c, w)
			}
			for _, d := range []string{s, c} {
				if v := figures[d+"."+w+".errors"]; v != 0.0 {
					t.Errorf("citus-latest.json: %s.%s.errors = %v, want 0", d, w, v)
				}
			}
		}
		// A tenant's statements are router queries: one shard each.
		for _, w := range []string{harness.PointRead, harness.CostSummary} {
			if v := figures[c+"."+w+".task_count"]; v != 1.0 {
				t.Errorf("citus-latest.json: %s.%s.task_count = %v, want 1 (a router query)", c, w, v)
			}
		}
		positive(c + ".provision_ms")
	}
	for _, name := range []string{"baseline.point_read.throughput_rps", "database.point_read.throughput_rps", "rls.point_read.throughput_ratio"} {
		if _, ok := figures[name]; ok {
			t.Errorf("citus-latest.json: %s is there; a Citus run has no baseline and no database strategy", name)
		}
	}

	md := string(readFile(t, out, "citus-latest.md"))
	for _, want := range []string{"## Ratios", "### point_read", "## What the coordinator hop costs", "## How it would scale with workers", "Not measured:", "Custom Scan (Citus Adaptive)"} {
		if !strings.Contains(md, want) {
			t.Errorf("citus-latest.md has no %q", want)
		}
	}
}
