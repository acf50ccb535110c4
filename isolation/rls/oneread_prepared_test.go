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
	// 3,200 reads and more; on Citus, on a busy machine, they have taken
	// most of a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
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
			// The application's tenant filter, as the server's reads have
			// it: on Citus a statement of one shard, not of all of them
			// (which took most of a minute for the test's 3,200 reads).
			rows, err := tx.Query(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 ORDER BY name`, tn.ID)
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

// A connection keeps at most 4,096 one-read statements prepared: past that,
// the least recently used is deallocated, in the pipeline of the read that
// needs the room, and a statement deallocated so is prepared again when
// next read. Every read still sees its tenant's rows only.
func TestOneReadStatementsAreBoundedLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	f := setup(t, 1, nil)
	// 4,201 statements prepared one after the other; on Citus, whose
	// coordinator plans each for its workers, on a busy machine, that has
	// taken more than a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// With the application's tenant filter, as the server's reads have it:
	// on Citus a statement of one shard, planned fast, not one of every
	// shard.
	sql := func(i int) string {
		return fmt.Sprintf(`SELECT count(*) FROM accounts WHERE tenant_id = $1 /* %d */`, i)
	}
	read := func(i int) {
		t.Helper()
		err := f.strategy.Run(isolation.OneRead(ctx), f.a, func(tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, sql(i), f.a.ID).Scan(&n); err != nil {
				return err
			}
			if n != 3 {
				return fmt.Errorf("read %d counts %d accounts of tenant a, want 3", i, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	prepared := func() map[string]bool {
		t.Helper()
		conn, err := f.app.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		rows, err := conn.Query(ctx, `SELECT statement FROM pg_prepared_statements WHERE name LIKE 'bulkhead\_one\_%'`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, s := range got {
			out[s] = true
		}
		return out
	}
	const kept, n = 4096, 4200
	for i := range n {
		read(i)
	}
	read(0) // the oldest, evicted: prepared again, evicting read 1's
	got := prepared()
	if len(got) != kept {
		t.Fatalf("the connection keeps %d one-read statements, want %d", len(got), kept)
	}
	for _, i := range []int{0, n - kept + 1, n - 1} {
		if !got[sql(i)] {
			t.Errorf("statement %d is not kept; it is among the %d most recently used", i, kept)
		}
	}
	for _, i := range []int{1, n - kept} {
		if got[sql(i)] {
			t.Errorf("statement %d is kept; it is the least recently used", i)
		}
	}
}

// A connection that lost track of a one-read statement it prepared (its
// record gone, the statement still on the server: a deallocation that
// failed) fails that read with the server's "already exists", and then
// deallocates it: the next read prepares it again and succeeds.
func TestOneReadRecoversAStatementItLostTrackOf(t *testing.T) {
	t.Parallel()
	f := setup(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	read := func() error {
		return f.strategy.Run(isolation.OneRead(ctx), f.a, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(new(int))
		})
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	conn, err := f.app.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	delete(conn.Conn().PgConn().CustomData(), "isolation.oneread.statements") // forget, keep it prepared
	conn.Release()
	if err := read(); err == nil {
		t.Log("the read after the record was lost succeeded") // acceptable too: nothing to recover
	}
	for i := range 2 {
		if err := read(); err != nil {
			t.Fatalf("read %d after the lost record: %v", i+1, err)
		}
	}
}
