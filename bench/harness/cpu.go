package harness

// CPU time per request of the saturation runs, read from /proc: what each
// strategy's requests cost the database server, and what they cost this
// process, which runs the Bulkhead servers and the load generator. Short
// saturation runs on a shared machine move one round's throughput by tens
// of per cent; the CPU time a request took moves far less, and says on
// which side of the connection a difference between strategies lies.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

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

// selfCPU is this process's CPU time so far, in seconds: every thread's,
// so the servers' and the load generator's together.
func selfCPU() (float64, error) {
	st, err := readStat(os.Getpid())
	if err != nil {
		return 0, err
	}
	return float64(st.utime+st.stime) / clockTicks, nil
}

// cpuMeter measures CPU time over runs: the plain database server's, on a
// -citus run the coordinator's and the workers' apart, and this
// process's. It is used from one goroutine.
type cpuMeter struct {
	plain, coordinator *procCPU // coordinator: nil but on a -citus run
	workers            []*procCPU
}

// newCPUMeter finds the nodes' postmasters; it returns nil (and logs why)
// where /proc does not tell: the run goes on without CPU figures.
func (h *harness) newCPUMeter(ctx context.Context) *cpuMeter {
	m := &cpuMeter{}
	var err error
	m.plain, err = nodeCPU(ctx, h.cluster)
	if err == nil && h.citus != nil {
		m.coordinator, err = nodeCPU(ctx, h.citus.Coordinator)
		for _, w := range h.citus.Workers {
			if err != nil {
				break
			}
			var p *procCPU
			p, err = nodeCPU(ctx, w)
			m.workers = append(m.workers, p)
		}
	}
	if err == nil {
		_, err = m.sample()
	}
	if err != nil {
		h.logf("no CPU figures: %v", err)
		return nil
	}
	return m
}

// cpuSample is the CPU seconds used so far by the plain server, the
// coordinator, the workers together, and this process.
type cpuSample struct{ plain, coordinator, workers, self float64 }

func (m *cpuMeter) sample() (cpuSample, error) {
	var s cpuSample
	var err error
	if s.plain, err = m.plain.seconds(); err != nil {
		return s, err
	}
	if m.coordinator != nil {
		if s.coordinator, err = m.coordinator.seconds(); err != nil {
			return s, err
		}
	}
	for _, w := range m.workers {
		v, err := w.seconds()
		if err != nil {
			return s, err
		}
		s.workers += v
	}
	s.self, err = selfCPU()
	return s, err
}

// cpuUse accumulates, per deployment and workload, the CPU seconds over
// the saturation runs and the requests they answered.
type cpuUse struct {
	plain, coordinator, workers, self float64
	requests                          int
}

// add adds the CPU time between before and after, over a run that
// answered requests.
func (u *cpuUse) add(before, after cpuSample, requests int) {
	u.plain += after.plain - before.plain
	u.coordinator += after.coordinator - before.coordinator
	u.workers += after.workers - before.workers
	u.self += after.self - before.self
	u.requests += requests
}

// recordCPU turns the CPU use of the saturation runs into figures per
// request: <s>.<w>.bench_cpu_ms_per_req, this process's (the servers and
// the load generator); db_cpu_ms_per_req, a plain deployment's database
// server's; and for a Citus one coordinator_cpu_ms_per_req,
// workers_cpu_ms_per_req, their sum db_cpu_ms_per_req, and
// coordinator_cpu_share.
func (h *harness) recordCPU(use map[string]*cpuUse) {
	for key, u := range use {
		if u.requests == 0 {
			continue
		}
		n := float64(u.requests)
		h.set(key+".bench_cpu_ms_per_req", u.self*1000/n)
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
