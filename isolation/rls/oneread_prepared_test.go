package rls_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// A connection prepares the statements of a one-read transaction once:
// BEGIN, COMMIT, and the binding, the bounds and the fence folded into one
// SELECT whose text is the same for every tenant, the tenant's values its
// arguments. So it keeps three, however many tenants it serves. Steps that
// do not fold (a statement of WithStatements) go as statements of their
// own, and a connection keeps at most 32 of those. Many tenants read at
// once over a few connections, each reading its own row only, whether its
// statements were prepared, are prepared in the same pipeline, or are
// parsed each time once the connection keeps enough.
func TestOneReadKeepsItsStatementsPrepared(t *testing.T) {
	t.Parallel()
	f := setup(t, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bounds := isolation.Bounds{Statement: 30 * time.Second, Lock: 5 * time.Second, IdleInTransaction: time.Minute}
	var tenants []isolation.Tenant
	for i := range 40 {
		tn := isolation.Tenant{ID: uuid.New(), Slug: fmt.Sprintf("tenant-%03d", i), Strategy: isolation.RLS}
		f.db.Exec(t, `INSERT INTO bulkhead.tenants (id, slug, name, isolation, status) VALUES ($1, $2, $2, 'rls', 'active')`, tn.ID, tn.Slug)
		err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', 'x', $3)`, tn.ID, uuid.New(), tn.Slug)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, tn)
	}
	// read reads tn's accounts as one read behind its fence; unfolded adds
	// a statement of tn's own that does not fold.
	read := func(tn isolation.Tenant, unfolded bool) error {
		fence, err := isolation.FenceStep(tn)
		if err != nil {
			return err
		}
		rctx := isolation.WithSteps(isolation.OneRead(isolation.WithBounds(ctx, bounds)), fence)
		if unfolded {
			rctx = isolation.WithStatements(rctx, "SET LOCAL application_name = '"+tn.Slug+"'")
		}
		return f.strategy.Run(rctx, tn, func(tx pgx.Tx) error {
			var names []string
			rows, err := tx.Query(ctx, `SELECT name FROM accounts ORDER BY name`)
			if err != nil {
				return err
			}
			if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(names) != 1 || names[0] != tn.Slug {
				return fmt.Errorf("tenant %s read %v", tn.Slug, names)
			}
			return nil
		})
	}

	// many has 8 readers read 200 times each, over the tenants in turn.
	many := func(unfolded bool) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := range 200 {
					if err := read(tenants[(i*7+w)%len(tenants)], unfolded); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	// On Citus nothing folds: every setting must be a SET LOCAL for the
	// workers to see it (isolation.Unfolded), eight statements in all.
	citus, err := isolation.IsCitus(ctx, f.app)
	if err != nil {
		t.Fatal(err)
	}
	folded := 3
	if citus {
		folded = 8
	}
	// One tenant, many reads: its statements are prepared once.
	for range 5 {
		if err := read(tenants[0], false); err != nil {
			t.Fatal(err)
		}
	}
	// Reads went over whichever of the 4 connections was free: each
	// prepared what it sent at most once.
	if kept := maxKept(ctx, t, f.app); kept == 0 || kept > folded {
		t.Fatalf("a connection keeps %d control statements after one tenant's reads, want 1 to %d", kept, folded)
	}
	many(false)
	if kept := maxKept(ctx, t, f.app); !citus && kept > folded {
		t.Fatalf("a connection keeps %d control statements after 40 tenants' reads, want at most 3: the binding is not folded", kept)
	}
	many(true)
	if kept := maxKept(ctx, t, f.app); kept > 32 {
		t.Fatalf("a connection keeps %d control statements, more than 32", kept)
	}
}

// maxKept is the most control statements one idle connection of pool
// keeps prepared.
func maxKept(ctx context.Context, t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	most := 0
	for _, conn := range pool.AcquireAllIdle(ctx) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'bulkhead\_ctl\_%'`).Scan(&n)
		conn.Release()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, n)
	}
	return most
}
