package database_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

// BenchmarkConnectAuth measures what a tenant connection costs to open
// with each authentication method: trust, the two password ones, and TLS
// with a client certificate or a password: connect (TCP, startup,
// authentication, backend start), one query, close. It runs a throwaway
// cluster of its own whose pg_hba.conf gives each method a role; the
// passwords are made up for the run. Besides the time, which a busy
// machine stretches, it reports the CPU time each connection cost the
// client (this process) and the server (the backends, which the
// postmaster reaps: its children's CPU time), which it does not. Run with
//
//	go run ./internal/cmd/withpg -- go test -run '^$' -bench ConnectAuth -benchtime 300x ./isolation/database/
//
// The figures are in README, "Database strategy: operations".
func BenchmarkConnectAuth(b *testing.B) {
	const hba = "local all all trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"hostnossl all bench_trust 127.0.0.1/32 trust\n" +
		"hostnossl all bench_md5 127.0.0.1/32 md5\n" +
		"hostnossl all bench_scram 127.0.0.1/32 scram-sha-256\n" +
		"hostssl all bench_tls 127.0.0.1/32 trust clientcert=verify-ca\n" +
		"hostssl all bench_tls_scram 127.0.0.1/32 scram-sha-256\n"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(b.TempDir(), "pg"), HBA: hba, TLS: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := c.Stop(); err != nil {
			b.Error(err)
		}
	})
	admin, err := pgx.Connect(ctx, c.URL("postgres", "postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(context.Background())
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		b.Fatal(err)
	}
	password := hex.EncodeToString(secret)
	for _, role := range []struct{ name, encryption string }{
		{"bench_trust", "scram-sha-256"}, {"bench_md5", "md5"}, {"bench_scram", "scram-sha-256"},
		{"bench_tls", "scram-sha-256"}, {"bench_tls_scram", "scram-sha-256"},
	} {
		if _, err := admin.Exec(ctx, "SET password_encryption = '"+role.encryption+"'"); err != nil {
			b.Fatal(err)
		}
		// The password is the benchmark's own, made up above: not input.
		if _, err := admin.Exec(ctx, "CREATE ROLE "+role.name+" LOGIN PASSWORD '"+password+"'"); err != nil {
			b.Fatal(err)
		}
	}
	for _, m := range []struct {
		name, role string
		tls        bool
	}{
		{"trust", "bench_trust", false}, {"md5", "bench_md5", false}, {"scram-sha-256", "bench_scram", false},
		{"tls-client-cert", "bench_tls", true}, {"tls+scram-sha-256", "bench_tls_scram", true},
	} {
		b.Run(m.name, func(b *testing.B) {
			u, err := url.Parse(c.URL(m.role, "postgres"))
			if err != nil {
				b.Fatal(err)
			}
			u.User = url.UserPassword(m.role, password)
			if !m.tls {
				u.RawQuery = "sslmode=disable"
			}
			cfg, err := pgx.ParseConfig(u.String())
			if err != nil {
				b.Fatal(err)
			}
			server, client := serverCPU(b, c), clientCPU(b)
			for b.Loop() {
				conn, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
					b.Fatal(err)
				}
				if err := conn.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// The last backends may still be exiting: let the postmaster
			// reap them before it is asked.
			time.Sleep(200 * time.Millisecond)
			perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(perOp(serverCPU(b, c)-server), "server-cpu-ms/op")
			b.ReportMetric(perOp(clientCPU(b)-client), "client-cpu-ms/op")
		})
	}
}

// serverCPU is the CPU time of the cluster's reaped processes so far: the
// postmaster's children's user and system time, from /proc (Linux).
func serverCPU(b *testing.B, c *pgcluster.Cluster) time.Duration {
	b.Helper()
	pidFile, err := os.ReadFile(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		b.Fatal(err)
	}
	pid, _, _ := strings.Cut(string(pidFile), "\n")
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(pid) + "/stat")
	if err != nil {
		b.Fatalf("the server's CPU time: %v (Linux only)", err)
	}
	// Fields after the command (in parentheses): cutime and cstime are
	// the 14th and 15th, in clock ticks of 1/100 s.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	var ticks int64
	for _, v := range f[13:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// clientCPU is this process's CPU time so far, user and system.
func clientCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
