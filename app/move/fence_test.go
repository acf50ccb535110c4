package move_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// fenced runs fn bound to tn behind its fence, through the registry
// itself: a refusal comes back rather than being followed.
func fenced(ctx context.Context, b bundle, tn isolation.Tenant, fn func(pgx.Tx) error) error {
	stmt, err := isolation.FenceStep(tn)
	if err != nil {
		return err
	}
	return b.reg.Run(isolation.WithSteps(ctx, stmt), tn, fn)
}

// acme returns the bundle's tenant as the control plane records it, and
// its strategy as an isolation.OwnerRunner.
func acme(ctx context.Context, t *testing.T, b bundle) (isolation.Tenant, isolation.Strategy, isolation.OwnerRunner) {
	t.Helper()
	rec, err := b.env.Control.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tn := rec.Isolated()
	s, err := b.reg.Named(tn.Strategy)
	if err != nil {
		t.Fatal(err)
	}
	owner, ok := s.(isolation.OwnerRunner)
	if !ok {
		t.Fatalf("the %s strategy cannot run owner transactions", tn.Strategy)
	}
	return tn, s, owner
}

// fenceLock returns the pg_locks classid and objid of tn's fence lock.
func fenceLock(t *testing.T, tn isolation.Tenant) (int64, int64) {
	t.Helper()
	class, key, ok := strings.Cut(isolation.FenceKey(tn.ID), ", ")
	c, err1 := strconv.ParseInt(class, 10, 32)
	k, err2 := strconv.ParseInt(key, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("fence key %q is not two integers", isolation.FenceKey(tn.ID))
	}
	return c, int64(uint32(int32(k)))
}

// TestFenceHoldsEveryPlacement holds the fence's functions to what the
// moves rely on, in the storage of each strategy: a tenant transaction
// holds the tenant's fence lock shared; while a cut-over holds it, a new
// transaction waits at its BEGIN, before any of its work; once the
// placement is closed (or, for shared tables, the tenant recorded
// elsewhere) it is refused with isolation.MovedCode, and its work never
// runs.
func TestFenceHoldsEveryPlacement(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{isolation.RLS, isolation.Schema, isolation.Database} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			b := setup(t, strategy)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tn, _, owner := acme(ctx, t, b)
			class, objid := fenceLock(t, tn)

			// Held shared, in the tenant's own transaction.
			var held int
			err := fenced(ctx, b, tn, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks
					WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted
					  AND pid = pg_backend_pid() AND classid = $1::bigint::oid AND objid = $2::bigint::oid`, class, objid).Scan(&held)
			})
			if err != nil {
				t.Fatalf("a fenced transaction of an open placement: %v", err)
			}
			if held != 1 {
				t.Fatalf("a fenced transaction holds %d shared fence locks, want 1", held)
			}

			// A cut-over holds it: a new transaction waits, then is
			// refused once the cut-over closes the placement.
			ran := make(chan struct{}, 1)
			done := make(chan error, 1)
			err = owner.RunOwner(ctx, tn, func(tx pgx.Tx) error {
				if err := isolation.Cutover(ctx, tx, tn); err != nil {
					return err
				}
				go func() {
					done <- fenced(ctx, b, tn, func(pgx.Tx) error { ran <- struct{}{}; return nil })
				}()
				// Wait until the new transaction waits for the lock.
				for deadline := time.Now().Add(20 * time.Second); ; {
					var waiting int
					if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks
						WHERE locktype = 'advisory' AND NOT granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid
						  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, class, objid).Scan(&waiting); err != nil {
						return err
					}
					if waiting > 0 {
						break
					}
					select {
					case err := <-done:
						t.Fatalf("a transaction passed the fence during a cut-over (err %v)", err)
					default:
					}
					if time.Now().After(deadline) {
						t.Fatal("the fenced transaction did not come to wait for the cut-over within 20 s")
					}
					time.Sleep(10 * time.Millisecond)
				}
				if strategy == isolation.RLS {
					// Shared tables carry no mark: the record is theirs.
					_, err := tx.Exec(ctx, `UPDATE bulkhead.tenants SET isolation = 'database' WHERE id = $1`, tn.ID)
					return err
				}
				return isolation.Close(ctx, tx, tn)
			})
			if err != nil {
				t.Fatalf("cut-over: %v", err)
			}
			select {
			case err := <-done:
				if !isolation.IsMoved(err) {
					t.Fatalf("after the cut-over a transaction of the closed placement returned %v, want the fence's refusal (%s)", err, isolation.MovedCode)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the fenced transaction did not end within 30 s of the cut-over")
			}
			select {
			case <-ran:
				t.Fatal("the work of a refused transaction ran")
			default:
			}
		})
	}
}

// TestFenceFailsClosedWithoutItsFunction: a tenant database whose fence
// function is missing (one cloned from an earlier release's template, or
// tampered with) serves nothing unfenced, and `bulkhead migrate` (the
// strategy's Migrate) puts the function back.
func TestFenceFailsClosedWithoutItsFunction(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.Database)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, s, owner := acme(ctx, t, b)
	err := owner.RunOwner(ctx, tn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DROP SCHEMA `+isolation.FenceSchema+` CASCADE`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	err = fenced(ctx, b, tn, func(pgx.Tx) error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("a tenant database without its fence function served a fenced transaction (err %v, ran %v)", err, ran)
	}
	if isolation.IsMoved(err) {
		t.Fatalf("a missing fence function reads as a move: %v", err)
	}
	if _, err := s.Migrate(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if err := fenced(ctx, b, tn, func(pgx.Tx) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("after migrate, a fenced transaction: err %v, ran %v", err, ran)
	}
	// Installed once: a second migrate leaves the function as it is (its
	// catalog row not even rewritten, which CREATE OR REPLACE would do).
	version := func() string {
		t.Helper()
		var v string
		err := fenced(ctx, b, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT xmin::text FROM pg_proc WHERE oid = to_regprocedure('`+isolation.FenceSchema+`.enter_database(integer, integer)')`).Scan(&v)
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := version()
	if _, err := s.Migrate(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if after := version(); before != after {
		t.Fatalf("a second migrate rewrote the fence function (xmin %s, then %s)", before, after)
	}
}

// A request routed to a schema the tenant has left, and caught while the
// schema's role is half-dropped (still in the catalog as the request sees
// it, the serving role no longer a member: "permission denied to set
// role"), follows the tenant to where it lives now instead of failing.
func TestFenceFollowsATenantPastItsHalfDroppedRole(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.Schema)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, _, _ := acme(ctx, t, b)
	if _, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: isolation.RLS}); err != nil {
		t.Fatal(err)
	}
	// The move dropped the schema and its role: put back the role as a
	// request racing the drop sees it, without the serving role in it.
	role := pgx.Identifier{before.Placement}.Sanitize()
	b.env.DB.Exec(t, "CREATE ROLE "+role+" NOLOGIN")
	t.Cleanup(func() { b.env.DB.Exec(t, "DROP ROLE IF EXISTS "+role) })

	fence := move.NewFence(b.reg, b.env.Pools.App)
	for _, one := range []bool{false, true} {
		rctx := ctx
		if one {
			rctx = isolation.OneRead(ctx)
		}
		var n int
		err := fence.Run(rctx, before, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
		})
		if err != nil {
			t.Fatalf("a request routed to the schema left behind (one read: %v): %v", one, err)
		}
		if n != 5 {
			t.Fatalf("a request routed to the schema left behind (one read: %v) counts %d accounts, want the tenant's 5", one, n)
		}
	}
}
