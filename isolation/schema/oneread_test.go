package schema_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// A one-statement read is prepared once per tenant a connection serves,
// so that a tenant served before finds its statement planned for its own
// search_path and role (one prepared statement for every tenant would be
// analysed and planned again at each change of tenant), and planned once:
// its generic plan from the first execution on (a statement of one tenant
// and connection runs only now and then, and each of its first five
// executions would be planned anew; not on Citus, whose planner routes by
// the parameters' values), and each tenant still reads its own rows.
func TestOneReadPreparesOncePerTenant(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 3, app: func(c *pgxpool.Config) { c.MaxConns, c.MinConns = 1, 0 }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const read = `SELECT count(*) FROM accounts WHERE tenant_id = $1`
	const rounds = 4
	for range rounds {
		for _, tn := range f.tenants {
			err := f.strategy.Run(isolation.OneRead(ctx), tn, func(tx pgx.Tx) error {
				var n int
				if err := tx.QueryRow(ctx, read, tn.ID).Scan(&n); err != nil {
					return err
				}
				if n != rowsPer {
					t.Errorf("tenant %s counts %d accounts, want its %d", tn.Slug, n, rowsPer)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	conn, err := f.app.Acquire(ctx) // the one connection that served them all
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	rows, err := conn.Query(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1`, read)
	if err != nil {
		t.Fatal(err)
	}
	type plans struct{ Generic, Custom int64 }
	runs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[plans])
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != len(f.tenants) {
		t.Fatalf("the read is prepared %d times on the connection, want once for each of %d tenants", len(runs), len(f.tenants))
	}
	for _, p := range runs {
		if p.Generic+p.Custom != rounds {
			t.Errorf("a tenant's statement ran %d times, want %d: %+v", p.Generic+p.Custom, rounds, runs)
		}
		if p.Custom != 0 && !pgtest.Citus(t) {
			t.Errorf("a tenant's statement was planned for its parameters %d times in %d runs, want its generic plan every time: %+v", p.Custom, rounds, runs)
		}
	}
}

// A tenant's transactions use generic plans only where the serving pool
// prepares its statements and keeps them: behind a transaction-mode pooler
// every statement is parsed anew, and a generic plan would only lose what
// the parameters' values tell the planner.
func TestGenericPlansOnlyWherePrepared(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"direct", "pgbouncer"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			want := "force_generic_plan"
			if pgtest.Citus(t) {
				want = "auto" // Citus routes by the parameters' values
			}
			var f *fixture
			if via == "pgbouncer" {
				db := pgtest.New(t)
				f = setupOn(t, db, options{appURL: pgBouncerURL(t, db), app: func(c *pgxpool.Config) {
					c.ConnConfig.DefaultQueryExecMode = postgres.ExecMode(config.PoolerPgBouncer)
				}})
				want = "auto"
			} else {
				f = setup(t, options{})
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var got string
			err := f.strategy.Run(ctx, f.tenants[0], func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&got)
			})
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("plan_cache_mode in a tenant transaction (%s) = %q, want %q", via, got, want)
			}
		})
	}
}
