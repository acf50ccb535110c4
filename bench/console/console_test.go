package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmoke runs the whole console benchmark at a tiny size — its own
// cluster, server and Chromium — and checks that it works and writes its
// files. It asserts no timing: only that every figure is there.
func TestSmoke(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	var stderr bytes.Buffer
	if code := run([]string{"-out", out, "-q", "-rows", "3000", "-small-rows", "300", "-runs", "1"}, &stderr); code != 0 {
		t.Fatalf("console bench exited %d: %s", code, stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(out, "console-latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r results
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("console-latest.json: %v", err)
	}
	for _, name := range []string{"signin.fcp_ms", "small.ready_ms", "large.ready_ms", "large.api_kib", "large.api_requests", "large.summary_month_ms", "large.ready_ratio"} {
		if v := r.Figures[name]; v <= 0 {
			t.Errorf("console-latest.json: %s = %v, want a positive number", name, v)
		}
	}
	if _, ok := r.Targets["console_large_ready_1s"]; !ok {
		t.Error("console-latest.json: no target")
	}
	md, err := os.ReadFile(filepath.Join(out, "console-latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| dashboard, large tenant (3000 rows) |") {
		t.Errorf("console-latest.md:\n%s", md)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-rows", "0"}, {"-runs", "-1"}, {"extra"}} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("%q exited %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}
