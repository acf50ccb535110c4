//go:build citus

package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A Citus cluster: the coordinator knows both workers, every node has the
// extension, the ports keep out of the kernel's range for outgoing
// connections, and a worker admits a TCP client only when it presents the
// cluster's node certificate.
func TestStartCitus(t *testing.T) {
	t.Parallel()
	if err := FindCitus(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	c, err := StartCitus(ctx, CitusOptions{Dir: filepath.Join(t.TempDir(), "citus"), Logf: t.Logf})
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Workers) != 2 {
		t.Fatalf("%d workers, want 2", len(c.Workers))
	}

	coord := connect(t, c.URL("postgres", CitusDatabase))
	rows, err := coord.Query(ctx, `SELECT nodeport FROM pg_dist_node WHERE isactive AND groupid <> 0 ORDER BY nodeport`)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	var want []int32
	for _, w := range c.Workers {
		want = append(want, int32(w.Port()))
	}
	if len(ports) != 2 || !(ports[0] == want[0] && ports[1] == want[1] || ports[0] == want[1] && ports[1] == want[0]) {
		t.Errorf("registered workers %v, want %v", ports, want)
	}

	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		f := strings.Fields(string(b))
		lo, _ = strconv.Atoi(f[0])
		hi, _ = strconv.Atoi(f[1])
	}
	for _, n := range append([]*Cluster{c.Coordinator}, c.Workers...) {
		if n.Port() >= lo && n.Port() <= hi {
			t.Errorf("node port %d is in the ephemeral range %d-%d", n.Port(), lo, hi)
		}
	}

	for i, w := range c.Workers {
		conn := connect(t, w.URL("postgres", CitusDatabase))
		if got := queryString(t, conn, `SELECT extname FROM pg_extension WHERE extname = 'citus'`); got != "citus" {
			t.Errorf("worker %d has no citus extension", i+1)
		}
		// Without the certificate: plain TCP, and TLS with no client
		// certificate, are both refused.
		for _, mode := range []string{"disable", "require"} {
			dsn := dsn(w.Port(), "postgres", CitusDatabase)
			dsn = strings.Replace(dsn, "sslmode=disable", "sslmode="+mode, 1)
			if conn, err := pgx.Connect(ctx, dsn); err == nil {
				conn.Close(context.Background())
				t.Errorf("worker %d admitted a client without the node certificate (sslmode=%s)", i+1, mode)
			}
		}
	}

	// The coordinator reaches the workers (as the current role, with the
	// node certificate).
	var ok bool
	if err := coord.QueryRow(ctx, `SELECT bool_and(success) FROM run_command_on_workers('SELECT 1')`).Scan(&ok); err != nil || !ok {
		t.Fatalf("run_command_on_workers: %v, %v", ok, err)
	}
}
