package harness

import (
	"context"
	"fmt"
	"path/filepath"

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
