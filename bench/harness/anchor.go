package harness

// The physical-limit anchors: pgbench, against the same server and the
// baseline's copy of the data, sending the statements the servers send
// with no server, no HTTP and no tenancy in between.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Anchor names, as they appear in the figures: pgbench runs reported as
// if they were strategies of the workload they anchor.
const (
	// Pgbench sends the workload's statement as one prepared statement in
	// autocommit (-M prepared) on long-lived connections.
	Pgbench = "pgbench"
	// PgbenchConnect is Pgbench with a new connection per transaction
	// (-C): the backend-start limit that bounds the database strategy.
	PgbenchConnect = "pgbench_connect"
)

// anchored lists, per workload, the anchors measured for it.
var anchored = map[string][]string{
	PointRead:   {Pgbench, PgbenchConnect},
	CostSummary: {Pgbench},
}

// anchorScripts is how many pgbench scripts a workload's requests are
// drawn into: each script is one statement with its values written in,
// picked at random per transaction, so the anchor reads tenants with the
// workload's skew.
const anchorScripts = 64

// pgbench finds the pgbench of the cluster's PostgreSQL.
func pgbench() (string, error) {
	dir, err := pgcluster.FindBin()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pgbench")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("pgbench is not beside the server binaries (%s): %w", dir, err)
	}
	return bin, nil
}

// writeAnchorScripts writes the pgbench scripts of workload w for the
// baseline deployment d under dir and returns their paths.
func (h *harness) writeAnchorScripts(dir, w string, d *deployment) ([]string, error) {
	pop := h.data.everyone()
	r := rand.New(rand.NewPCG(h.cfg.Seed, 0xa2c4))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for n := range anchorScripts {
		i := pop.pick(r)
		k := r.IntN(1 << 20)
		var sql string
		var args []any
		switch w {
		case PointRead:
			sql, args = finops.AccountStatement, []any{d.tenants[i].id, accountID(i, 1+k%h.data.Tenants[i].Accounts)}
		case CostSummary:
			from, to := h.data.month(k % 12)
			f, _ := time.Parse(time.DateOnly, from)
			t, _ := time.Parse(time.DateOnly, to)
			var err error
			sql, args, err = finops.SummaryQuery{Filter: finops.CostFilter{From: f, To: t}, GroupBy: finops.ByService}.
				Statement(isolation.Tenant{ID: d.tenants[i].id})
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("no anchor for workload %q", w)
		}
		text, err := inline(sql, args)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%02d.sql", w, n))
		if err := os.WriteFile(path, []byte(text+";\n"), 0o644); err != nil {
			return nil, err
		}
		files = append(files, path)
	}
	return files, nil
}

// inline writes args into sql as literals, from the last placeholder to the
// first (so that $1 does not match the start of $10).
func inline(sql string, args []any) (string, error) {
	for n := len(args); n >= 1; n-- {
		var lit string
		switch v := args[n-1].(type) {
		case uuid.UUID:
			lit = "'" + v.String() + "'::uuid"
		case time.Time:
			lit = "'" + v.Format(time.DateOnly) + "'::date"
		case string:
			lit = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		default:
			return "", fmt.Errorf("inline %T", v)
		}
		sql = strings.ReplaceAll(sql, "$"+strconv.Itoa(n), lit)
	}
	return sql, nil
}

// minAnchorSeconds is the shortest pgbench run.
const minAnchorSeconds = 5

var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)

// runAnchor runs pgbench's anchor a of the scripts files for d against
// the baseline database, at saturation for the length of a saturation run,
// and returns its outcome (throughput only: pgbench reports no per-request
// latencies here).
func (h *harness) runAnchor(ctx context.Context, bin, a string, files []string) (outcome, error) {
	// pgbench counts whole seconds, and its clients' first transactions
	// prepare every script's statement: a run shorter than a few seconds
	// measures that more than the statements.
	secs := max(int(h.cfg.Duration.Round(time.Second)/time.Second), minAnchorSeconds)
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(h.cfg.Workers), "-j", "2", "-T", strconv.Itoa(secs)}
	if a == PgbenchConnect {
		args = append(args, "-C")
	}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	args = append(args, h.cluster.URL(isolation.AppRole, "bench_baseline"))
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return outcome{}, fmt.Errorf("pgbench %s: %w: %s", a, err, strings.TrimSpace(errOut.String()))
	}
	m := tpsLine.FindSubmatch(out.Bytes())
	if m == nil {
		// No transaction finished (a machine too busy to connect in
		// time): no anchor this round, rather than no run.
		h.logf("pgbench %s: no tps in its output: %s", a, strings.Join(strings.Fields(out.String()), " "))
		return outcome{elapsed: time.Duration(secs) * time.Second}, nil
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return outcome{}, err
	}
	// An outcome of tps·secs requests over secs: throughput() is tps.
	return outcome{ok: int(tps * float64(secs)), elapsed: time.Duration(secs) * time.Second}, nil
}
