package harness

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
)

// explained are the store's queries whose plans the report shows, with
// literals in place of parameters: %[1]s the tenant id, %[2]s an account
// id, %[3]s and %[4]s the first and last day of a month.
var explained = []struct{ workload, sql string }{
	{PointRead, `SELECT id, name FROM accounts WHERE tenant_id = '%[1]s' AND id = '%[2]s'`},
	{CostSummary, `SELECT service, currency, sum(amount)::text FROM cost_items
WHERE tenant_id = '%[1]s' AND usage_date BETWEEN '%[3]s' AND '%[4]s' GROUP BY 1, 2 ORDER BY 1, 2`},
}

// diagnose records, after the load, what explains the differences between
// strategies: the plans of a point read and of a month's summary of the
// first (largest) tenant in each deployment, run as the server runs them
// (the serving role, inside the strategy's transaction), and, for the
// database strategy, what opening a connection to a tenant database costs
// — what a request to a tenant without an open connection pays.
func (h *harness) diagnose(ctx context.Context, deps map[string]*deployment) (map[string]string, error) {
	plans := map[string]string{}
	from, to := h.data.month(1)
	for _, s := range h.cfg.Strategies {
		d := deps[s]
		if d == nil || len(d.tenants) == 0 {
			continue
		}
		t := d.tenants[0]
		for _, q := range explained {
			if !slices.Contains(h.cfg.Workloads, q.workload) {
				continue
			}
			sql := fmt.Sprintf(q.sql, t.id, accountID(t.spec.Index, 1), from, to)
			var lines []string
			err := d.run(ctx, t.iso, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) `+sql, pgx.QueryExecModeSimpleProtocol)
				if err != nil {
					return err
				}
				lines, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("explain %s %s: %w", s, q.workload, err)
			}
			plans[s+" "+q.workload] = strings.Join(lines, "\n")
			for _, l := range lines {
				// Citus: how many shards the statement went to (1: a
				// router query).
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Task Count: "); ok {
					if n, err := strconv.Atoi(v); err == nil {
						h.set(s+"."+q.workload+".task_count", float64(n))
					}
				}
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Execution Time: "); ok {
					var ms float64
					if _, err := fmt.Sscanf(v, "%f ms", &ms); err == nil {
						// Citus: an indented one is the worker's
						// execution of the shard query; the last,
						// at the margin, the coordinator's.
						name := ".explain_ms"
						if strings.HasPrefix(l, " ") {
							name = ".worker_explain_ms"
						}
						h.set(s+"."+q.workload+name, ms)
					}
				}
			}
		}
	}
	if d := deps[Database]; d != nil {
		took, err := h.connectTimes(ctx, d, 20)
		if err != nil {
			return nil, err
		}
		h.set("database.connect_ms", median(took))
	}
	return plans, nil
}

// connectTimes opens n connections as the serving role, each to another
// small tenant's database, and times each up to its first query's answer.
func (h *harness) connectTimes(ctx context.Context, d *deployment, n int) ([]float64, error) {
	var took []float64
	for _, i := range h.data.Small[:min(n, len(h.data.Small))] {
		begin := time.Now()
		conn, err := pgx.Connect(ctx, h.cluster.URL(isolation.AppRole, database.DBName(d.tenants[i].id)))
		if err != nil {
			return nil, fmt.Errorf("connect to a tenant database: %w", err)
		}
		_, err = conn.Exec(ctx, `SELECT count(*) FROM accounts`)
		took = append(took, float64(time.Since(begin))/float64(time.Millisecond))
		conn.Close(context.Background())
		if err != nil {
			return nil, fmt.Errorf("query a tenant database: %w", err)
		}
	}
	return took, nil
}

// run runs fn in a transaction of d's server as a request would: through
// the strategy, or for the baseline through a plain transaction.
func (d *deployment) run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	if d.name == Baseline {
		return pgx.BeginTxFunc(ctx, d.srv.pools.App, pgx.TxOptions{}, fn)
	}
	return d.srv.strategies.Run(ctx, t, fn)
}
