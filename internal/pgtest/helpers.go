package pgtest

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CountingDialer dials like pgx does by default and adds to writes once per
// write on every connection it made: pgx flushes once per round trip, so
// the count is the round trips the client started. It is safe for
// concurrent use.
func CountingDialer(writes *atomic.Int64) pgconn.DialFunc {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: writes}, nil
	}
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Count runs sql, a query of one integer (a count), on q and returns its
// answer, failing tb on any error.
func Count(tb testing.TB, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) int {
	tb.Helper()
	var n int
	if err := q.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

// BenchTenants is how many tenants a benchmark makes:
// BULKHEAD_BENCH_TENANTS when set, else def.
func BenchTenants(tb testing.TB, def int) int {
	v := os.Getenv("BULKHEAD_BENCH_TENANTS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("BULKHEAD_BENCH_TENANTS=%q: want a positive number", v)
	}
	return n
}

// BackendCPU returns the CPU time the server process pid (a backend:
// pgconn.PgConn.PID, pg_backend_pid()) has run for, from
// /proc/PID/schedstat, in nanoseconds rather than the clock ticks of
// /proc/PID/stat; ok is false when that process is not on this machine (a
// server elsewhere). Benchmarks report it beside wall time: what other
// work on a busy machine does to wall time cancels out of it.
func BackendCPU(pid uint32) (d time.Duration, ok bool) {
	raw, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/schedstat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 0, false
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err == nil
}

// MachineCPU returns the CPU time every process on this machine has run
// for, summed over its CPUs (the busy fields of /proc/stat: all but idle
// and iowait); ok is false where there is no /proc/stat. A benchmark
// whose client, server and PostgreSQL all run here takes it before and
// after: unlike BackendCPU it counts the Go side too, and the backends of
// every connection, however many databases they serve. Anything else the
// machine runs meanwhile counts as well.
func MachineCPU() (d time.Duration, ok bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	// user nice system idle iowait irq softirq; steal, time the machine
	// ran someone else, is not ours.
	for i, v := range f[1:8] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, true
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

// RoleBackendCPU returns, by backend process id, the CPU time (BackendCPU)
// of every client backend of the cluster admin connects to (a superuser's
// DSN) that role is signed in as, in any database: the serving backends
// of every tenant database at once. A benchmark takes it before and after
// and sums the growth of the backends found both times (CPUGrowth);
// backends that start or end between the two are not counted, so it
// suits a working set whose connections stay open. ok is false when some
// backend is not on this machine.
func RoleBackendCPU(ctx context.Context, admin, role string) (cpu map[uint32]time.Duration, ok bool, err error) {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, false, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'`, role)
	if err != nil {
		return nil, false, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, false, err
	}
	cpu, ok = make(map[uint32]time.Duration, len(pids)), true
	for _, pid := range pids {
		d, found := BackendCPU(uint32(pid))
		cpu[uint32(pid)] = d
		ok = ok && found
	}
	return cpu, ok, nil
}

// CPUGrowth sums, over the backends in both before and after
// (RoleBackendCPU), how much CPU time each ran for between the two.
func CPUGrowth(before, after map[uint32]time.Duration) time.Duration {
	var sum time.Duration
	for pid, d := range after {
		if b, ok := before[pid]; ok {
			sum += d - b
		}
	}
	return sum
}

// PoolBackendCPU returns the CPU time the backends of pool's idle
// connections have run for, summed (BackendCPU); ok is false when some
// backend is not on this machine. A benchmark that runs one thing at a
// time on a pool takes it before and after.
func PoolBackendCPU(ctx context.Context, pool *pgxpool.Pool) (sum time.Duration, ok bool) {
	ok = true
	for _, c := range pool.AcquireAllIdle(ctx) {
		d, found := BackendCPU(c.Conn().PgConn().PID())
		c.Release()
		sum += d
		ok = ok && found
	}
	return sum, ok
}
