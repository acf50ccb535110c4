package schema_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// A tenant's transactions run on the connections of its lane, so that a
// connection meets only its lanes' tenants (their catalog entries and
// plans warm) rather than every tenant; each still reads only its own
// rows on a connection other tenants used.
func TestTenantsKeepToTheirLanes(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 8, app: func(c *pgxpool.Config) { c.MaxConns = 16 }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lanes := map[int32]map[int]bool{} // backend → the lanes it served
	for range 3 {
		for _, tn := range f.tenants {
			lane := schema.LaneOf(f.strategy, tn.ID)
			if lane < 0 {
				t.Fatal("a strategy over a pool of 16 connections keeps no lanes")
			}
			var pid int32
			var n int
			err := f.strategy.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT pg_backend_pid(), count(*) FROM accounts`).Scan(&pid, &n)
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != rowsPer {
				t.Errorf("tenant %s counts %d accounts, want its %d", tn.Slug, n, rowsPer)
			}
			if lanes[pid] == nil {
				lanes[pid] = map[int]bool{}
			}
			lanes[pid][lane] = true
		}
	}
	for pid, ls := range lanes {
		if len(ls) > 1 {
			t.Errorf("backend %d served the tenants of %d lanes, want one lane's: %v", pid, len(ls), ls)
		}
	}
}
