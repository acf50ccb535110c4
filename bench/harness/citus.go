package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/bench/report"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

// startCitus starts the Citus cluster of a -citus run under dir/citus: a
// coordinator and workers on this machine, each node with the plain
// cluster's benchmark settings but for wal_level and shared_buffers (each
// node's share of the memory limit the plain cluster has alone). It
// returns the nodes' shared_buffers.
func startCitus(ctx context.Context, dir string, rows int64, workers int, logf func(string, ...any)) (*pgcluster.Citus, string, error) {
	settings := benchSettings(rows, len(CitusStrategies), workers+1)
	// pgcluster.StartCitus wants logical decoding for shard moves, which
	// the benchmark does not make; minimal WAL would refuse it.
	delete(settings, "wal_level")
	delete(settings, "max_wal_senders")
	c, err := pgcluster.StartCitus(ctx, pgcluster.CitusOptions{
		Dir:      filepath.Join(dir, "citus"),
		Workers:  workers,
		Settings: settings,
		Logf:     logf,
	})
	return c, settings["shared_buffers"], err
}

// citusVersion is the coordinator's citus extension version.
func citusVersion(ctx context.Context, c *pgcluster.Citus) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres", pgcluster.CitusDatabase))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'citus'`).Scan(&v)
	return v, err
}

// citusSettings describes the Citus cluster of a run, for the report.
func citusSettings(cfg Config, m report.Machine, sharedBuffers string) string {
	return fmt.Sprintf("Citus %s: a coordinator and %d workers on this machine (loopback, the same %d cores as the plain server, the load generator and the servers), "+
		"each node with the plain server's settings but wal_level logical and shared_buffers %s; citus.shard_count at its default (32); every tenant table distributed on tenant_id, co-located (rls), "+
		"or one distributed schema per tenant (schema), by `bulkhead migrate` and tenant provisioning as in production; the Bulkhead servers connect to the coordinator directly",
		m.Citus, cfg.CitusWorkers, m.Cores, sharedBuffers)
}

// procCPU is the CPU time of the server process tree of one node:
// everything its postmaster and its children have used, in seconds.
type procCPU struct {
	postmaster int
}

// nodeCPU finds n's postmaster: the parent of a backend of its.
func nodeCPU(ctx context.Context, n node) (*procCPU, error) {
	conn, err := pgx.Connect(ctx, n.URL("postgres", "postgres"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return nil, err
	}
	st, err := readStat(pid)
	if err != nil {
		return nil, err
	}
	return &procCPU{postmaster: st.ppid}, nil
}

// seconds is the CPU time the node has used so far: its postmaster's own
// and that of its children already ended (which the postmaster reaps), and
// that of the children that run.
func (p *procCPU) seconds() (float64, error) {
	pm, err := readStat(p.postmaster)
	if err != nil {
		return 0, err
	}
	ticks := pm.utime + pm.stime + pm.cutime + pm.cstime
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != p.postmaster {
			continue // gone, or not a child of this node
		}
		ticks += st.utime + st.stime
	}
	return float64(ticks) / clockTicks, nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

type stat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// readStat reads the fields of /proc/<pid>/stat the CPU accounting needs.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// that follow start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime to cstime 14 to 17.
	if len(f) < 15 {
		return stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var s stat
	s.ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: ppid: %w", pid, err)
	}
	for j, dst := range []*int64{&s.utime, &s.stime, &s.cutime, &s.cstime} {
		if *dst, err = strconv.ParseInt(f[11+j], 10, 64); err != nil {
			return stat{}, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, 14+j, err)
		}
	}
	return s, nil
}

// cpuMeter measures the database servers' CPU time over runs: the plain
// server, and the Citus coordinator and workers apart. It is used from
// one goroutine.
type cpuMeter struct {
	plain, coordinator *procCPU
	workers            []*procCPU
}

// newCPUMeter finds the nodes' postmasters; it returns nil (and logs why)
// where /proc does not tell: the run goes on without CPU figures.
func (h *harness) newCPUMeter(ctx context.Context) *cpuMeter {
	m := &cpuMeter{}
	var err error
	if m.plain, err = nodeCPU(ctx, h.cluster); err == nil {
		m.coordinator, err = nodeCPU(ctx, h.citus.Coordinator)
	}
	for _, w := range h.citus.Workers {
		if err != nil {
			break
		}
		var p *procCPU
		p, err = nodeCPU(ctx, w)
		m.workers = append(m.workers, p)
	}
	if err == nil {
		_, err = m.plain.seconds()
	}
	if err != nil {
		h.logf("no CPU figures of the database servers: %v", err)
		return nil
	}
	return m
}

// cpuSample is the CPU seconds used so far by the plain server, the
// coordinator and the workers together.
type cpuSample struct{ plain, coordinator, workers float64 }

func (m *cpuMeter) sample() (cpuSample, error) {
	var s cpuSample
	var err error
	if s.plain, err = m.plain.seconds(); err != nil {
		return s, err
	}
	if s.coordinator, err = m.coordinator.seconds(); err != nil {
		return s, err
	}
	for _, w := range m.workers {
		v, err := w.seconds()
		if err != nil {
			return s, err
		}
		s.workers += v
	}
	return s, nil
}

// cpuUse accumulates, per deployment and workload, the database servers'
// CPU seconds over the saturation runs and the requests they answered.
type cpuUse struct {
	plain, coordinator, workers float64
	requests                    int
}

// recordCPU turns the CPU use of the saturation runs into figures per
// request: <s>.<w>.db_cpu_ms_per_req for a plain deployment (its server),
// and for a Citus one coordinator_cpu_ms_per_req, workers_cpu_ms_per_req,
// their sum db_cpu_ms_per_req, and coordinator_cpu_share.
func (h *harness) recordCPU(use map[string]*cpuUse) {
	for key, u := range use {
		if u.requests == 0 {
			continue
		}
		n := float64(u.requests)
		if strings.HasPrefix(key, CitusPrefix) {
			h.set(key+".coordinator_cpu_ms_per_req", u.coordinator*1000/n)
			h.set(key+".workers_cpu_ms_per_req", u.workers*1000/n)
			h.set(key+".db_cpu_ms_per_req", (u.coordinator+u.workers)*1000/n)
			if t := u.coordinator + u.workers; t > 0 {
				h.set(key+".coordinator_cpu_share", u.coordinator/t)
			}
			continue
		}
		h.set(key+".db_cpu_ms_per_req", u.plain*1000/n)
	}
}
