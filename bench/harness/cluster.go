package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/bench/report"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// bytesPerRow estimates what one cost item takes on disk, heap and its
// three indexes together; copies is how many copies of the data set the
// cluster holds (RLS, baseline, schema, database).
const (
	bytesPerRow = 300
	copies      = 4
)

// startCluster starts the throwaway cluster under dir with benchmark
// settings: durability off (a crash loses nothing of value), shared_buffers
// sized to hold every copy of the data set where memory allows, checkpoints
// out of the way of the load, and JIT off (it compiles per query, which
// only adds noise at these row counts); and PL/pgSQL preloaded, as the
// README advises for servers of tenant databases (the database strategy's
// fence is a PL/pgSQL function, which a new backend would otherwise load
// before its first answer).
func startCluster(ctx context.Context, dir string, rows int64, logf func(string, ...any)) (*pgcluster.Cluster, string, error) {
	settings := benchSettings(rows, copies, 1)
	settings["shared_preload_libraries"] = "plpgsql"
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Settings: settings, Logf: logf})
	if err != nil {
		return nil, "", err
	}
	return c, settings["shared_buffers"], nil
}

// benchSettings are the benchmark's server settings for one of nodes
// servers that together hold copies copies of a data set of rows cost
// items: shared_buffers is the node's share, within a quarter of the
// machine's memory for all of them.
func benchSettings(rows int64, copies, nodes int) map[string]string {
	want := rows * bytesPerRow * int64(copies) / int64(nodes)
	limit := memTotal() / 4
	if limit <= 0 {
		limit = 1 << 30
	}
	limit /= int64(nodes)
	sb := min(max(want, 128<<20), limit, 4<<30)
	return map[string]string{
		"shared_buffers":       fmt.Sprintf("%dMB", sb>>20),
		"max_wal_size":         "8GB",
		"checkpoint_timeout":   "30min",
		"wal_level":            "minimal",
		"max_wal_senders":      "0",
		"maintenance_work_mem": "256MB",
		"work_mem":             "16MB",
		"jit":                  "off",
		"max_connections":      "400",
	}
}

// memTotal is the machine's memory in bytes, or 0 when unknown.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// machine describes where the figures were measured.
func machine(ctx context.Context, conn *pgx.Conn, sharedBuffers string) report.Machine {
	m := report.Machine{
		CPU:           cpuModel(),
		Cores:         runtime.NumCPU(),
		MemoryGiB:     float64(memTotal()) / (1 << 30),
		OS:            runtime.GOOS + "/" + runtime.GOARCH,
		Go:            runtime.Version(),
		LoadAvg:       loadAvg(),
		SharedBuffers: sharedBuffers,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += " " + strings.TrimSpace(string(b))
	}
	_ = conn.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&m.PostgreSQL)
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/tsenart/vegeta/v12" {
				m.Vegeta = d.Version
			}
		}
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAvg is the one-minute load average, or -1 when unknown: the machine
// is shared, and the report says how busy it was.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// sampler polls pg_stat_activity for the serving role's sessions on tenant
// databases (the database strategy's pools), keeping the highest count
// seen. It is safe for concurrent use.
type sampler struct {
	conn *pgx.Conn
	mu   sync.Mutex
	peak int
	n    int
	stop chan struct{}
	done chan struct{}
}

// sessionsQuery counts the sessions of role $1 on the databases whose names
// match $2: client backends only. A parallel query's workers are listed
// under their leader's role and database too, but they are not
// connections: they count against max_worker_processes, not
// max_connections, and the budget does not hold them.
const sessionsQuery = `
	SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND usename = $1 AND datname ~ $2`

// startSampler samples every interval on conn (which it then owns) until
// Stop: the serving role's sessions on tenant databases.
func startSampler(ctx context.Context, conn *pgx.Conn, interval time.Duration) *sampler {
	return startSamplerOf(ctx, conn, interval, isolation.AppRole, `^t_[0-9a-f]{32}$`)
}

// startSamplerOf samples the sessions of role on the databases matching
// pattern.
func startSamplerOf(ctx context.Context, conn *pgx.Conn, interval time.Duration, role, pattern string) *sampler {
	s := &sampler{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			var n int
			if err := conn.QueryRow(ctx, sessionsQuery, role, pattern).Scan(&n); err == nil {
				s.mu.Lock()
				s.peak, s.n = max(s.peak, n), s.n+1
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop stops sampling and returns the peak and the number of samples.
func (s *sampler) Stop() (peak, samples int) {
	close(s.stop)
	<-s.done
	s.conn.Close(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.n
}
