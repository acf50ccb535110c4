// Package report writes the benchmark harness's results: latest.json (one
// flat object of named figures and the machine's description), latest.md
// (tables, and the targets marked met or missed) and latest.svg (a
// chart of each strategy's cost against the baseline). It only formats:
// every function here is pure, and safe for concurrent use.
package report

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// Machine describes where the figures were measured.
type Machine struct {
	CPU           string  `json:"cpu"`
	Cores         int     `json:"cores"`
	MemoryGiB     float64 `json:"memory_gib"`
	OS            string  `json:"os"`
	Go            string  `json:"go"`
	PostgreSQL    string  `json:"postgresql"`
	Vegeta        string  `json:"vegeta"`
	SharedBuffers string  `json:"shared_buffers"`
	// Citus is the citus extension's version in a -citus run.
	Citus string `json:"citus,omitempty"`
	// LoadAvg is the one-minute load average when the run started: the
	// machine is shared.
	LoadAvg float64 `json:"load_avg_at_start"`
}

// Results is one run of the harness.
type Results struct {
	Machine Machine
	// Figures are the named measurements, such as
	// "rls.point_read.p99_ms" and "rls.point_read.p99_ratio" (to the
	// baseline of the same round; the median over rounds).
	Figures map[string]float64
	// Strategies and Workloads are those that ran, in report order.
	Strategies, Workloads []string
	// Settings describe the run in words, for the report.
	Settings map[string]string
	// Plans are EXPLAIN ANALYZE outputs keyed "<strategy> <workload>".
	Plans map[string]string
}

// Get returns a figure and whether it is there (and a number).
func (r *Results) Get(name string) (float64, bool) {
	v, ok := r.Figures[name]
	return v, ok && !math.IsNaN(v) && !math.IsInf(v, 0)
}

// Write writes latest.json, latest.md and latest.svg into dir.
func Write(dir string, r *Results) error {
	return writeFiles(dir, r, "latest.json", map[string]func(*Results) string{
		"latest.md":  Markdown,
		"latest.svg": SVG,
	})
}

// writeFiles writes r as JSON into dir under jsonName, and under each
// other name what its function renders of r.
func writeFiles(dir string, r *Results, jsonName string, renders map[string]func(*Results) string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := JSON(r)
	if err != nil {
		return err
	}
	files := map[string][]byte{jsonName: js}
	for name, render := range renders {
		files[name] = []byte(render(r))
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// JSON is latest.json: the figures rounded to four significant digits,
// the targets as target.<name>.met (true or false) and .measured, and the
// machine under "machine", keys sorted.
func JSON(r *Results) ([]byte, error) {
	out := map[string]any{"machine": r.Machine}
	for k, v := range r.Figures {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue // not measured
		}
		out[k] = round4(v)
	}
	for _, t := range Evaluate(r) {
		if t.Known {
			out["target."+t.Name+".met"] = t.Met
			out["target."+t.Name+".measured"] = round4(t.Measured)
			out["target."+t.Name+".limit"] = t.Limit
		}
	}
	b, err := json.MarshalIndent(out, "", "  ") // maps marshal with sorted keys
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// round4 rounds v to four significant digits.
func round4(v float64) float64 {
	if v == 0 {
		return 0
	}
	p := math.Pow(10, 3-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
