package move_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// running reports whether err is the conflict of a move another runner
// holds: a *control.MoveRunningError, answered as a 409 conflict.
func running(err error) bool {
	var r *control.MoveRunningError
	var c *store.ConflictError
	return errors.As(err, &r) && errors.As(err, &c) && c.Msg == control.MoveRunningMsg
}

// TestMoveRunsOnce races two movers (two processes: each its own Mover)
// to begin the same move: exactly one runs it, the other is refused. While
// it runs, a resume, an abort and the admin API's move and abort are
// refused too; it then runs to its end.
func TestMoveRunsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.RLS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	to := control.Placement{Isolation: isolation.Database}

	type begun struct {
		run func(context.Context) (control.Move, error)
		err error
	}
	// The winner stops after provisioning until the others have tried
	// (its lease renewed meanwhile).
	held, release := make(chan struct{}), make(chan struct{})
	hold := move.Options{Lease: 3 * time.Second, AfterStep: func(step string) error {
		if step == control.MoveProvisioned {
			close(held)
			select {
			case <-release:
			case <-time.After(time.Minute):
				return errors.New("not released within a minute")
			}
		}
		return nil
	}}
	movers := []*move.Mover{b.mover(hold), b.mover(hold)}
	results := make([]begun, len(movers))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, m := range movers {
		wg.Go(func() {
			<-gate
			_, run, err := m.Begin(ctx, "acme", to)
			results[i] = begun{run, err}
		})
	}
	close(gate)
	await.Group(t, &wg, "the two movers to begin")
	var winner func(context.Context) (control.Move, error)
	for i, r := range results {
		switch {
		case r.err == nil && winner == nil:
			winner = r.run
		case r.err == nil:
			t.Fatalf("both movers began the move")
		case !running(r.err):
			t.Fatalf("mover %d: %v, want the conflict %q", i, r.err, control.MoveRunningMsg)
		}
	}
	if winner == nil {
		t.Fatal("neither mover began the move")
	}

	// While the winner runs, every other runner is refused.
	other := b.mover(move.Options{})
	checkRefused := func() {
		if _, err := other.Move(ctx, "acme", to); !running(err) {
			t.Errorf("resume while the move runs: %v, want the conflict", err)
		}
		if _, err := other.Abort(ctx, "acme"); !running(err) {
			t.Errorf("abort while the move runs: %v, want the conflict", err)
		}
		for _, body := range []map[string]any{{"to": "database"}, {"abort": true}} {
			r := b.env.Do(t, "POST", "/admin/v1/tenants/acme/move", apitest.AdminToken, body)
			var p struct{ Detail string }
			if r.Status == 409 {
				r.JSON(t, &p)
			}
			if r.Status != 409 || r.Header.Get("Content-Type") != "application/problem+json" || p.Detail != control.MoveRunningMsg {
				t.Errorf("POST move %v while the move runs: %s, want a 409 problem %q", body, r, control.MoveRunningMsg)
			}
		}
	}
	done := make(chan struct{})
	var mv control.Move
	var runErr error
	go func() {
		defer close(done)
		mv, runErr = winner(ctx)
	}()
	select {
	case <-held:
	case <-done:
		t.Fatalf("the move ended before it was held: %+v, %v", mv, runErr)
	case <-time.After(time.Minute):
		t.Fatal("the move did not reach provisioned within a minute")
	}
	// Longer than the lease: the winner renews it meanwhile.
	time.Sleep(4 * time.Second)
	checkRefused()
	close(release)
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the move did not end within two minutes")
	}
	if runErr != nil || mv.Step != control.MoveDone {
		t.Fatalf("the winner's move: %+v, %v", mv, runErr)
	}
	// Released at the end: nothing holds the tenant.
	if _, err := other.Move(ctx, "acme", control.Placement{Isolation: isolation.RLS}); err != nil {
		t.Fatalf("a move after the first ended: %v", err)
	}
}

// TestMoveLeaseLostCannotSwitch runs a mover that neither renews its
// lease nor stops when it could run out (a stalled process), lets another
// take the lease after the copy, and checks that the stalled one can
// neither switch the tenant nor record a step: the tenant stays served
// from its source, and the move, resumed by another, ends.
func TestMoveLeaseLostCannotSwitch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ from, to string }{
		{isolation.RLS, isolation.Database}, // switched in the cut-over's own transaction
		{isolation.Database, isolation.RLS}, // closed, then switched
	} {
		t.Run(c.from+"-"+c.to, func(t *testing.T) {
			t.Parallel()
			b := setup(t, c.from)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			thief, err := uuid.NewV7()
			if err != nil {
				t.Fatal(err)
			}
			var stolen control.Move
			// The lease lasts until the copy is recorded however slow the
			// machine, and then runs out (runOut): the stalled runner
			// renews nothing and does not stop itself.
			stalled := b.mover(move.Options{Lease: time.Minute, AfterStep: func(step string) error {
				if step != control.MoveCopied {
					return nil
				}
				runOut(t, b)
				// Stalled past the lease: another process takes the move.
				deadline := time.Now().Add(30 * time.Second)
				for {
					mv, err := b.env.Control.ClaimMove(ctx, "acme", thief, time.Minute)
					if err == nil {
						stolen = mv
						return nil
					}
					if !running(err) {
						return err
					}
					if time.Now().After(deadline) {
						return errors.New("the stalled mover's lease did not run out within 30 s")
					}
					time.Sleep(100 * time.Millisecond)
				}
			}})
			move.Unfenced(stalled)
			_, err = stalled.Move(ctx, "acme", control.Placement{Isolation: c.to})
			if !errors.Is(err, control.ErrLeaseLost) {
				t.Fatalf("the stalled mover: %v, want %v", err, control.ErrLeaseLost)
			}
			tn, err := b.env.Control.Tenant(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if tn.Isolation != c.from {
				t.Fatalf("the stalled mover switched the tenant to %s", tn.Isolation)
			}
			open, err := b.env.Control.OpenMove(ctx, "acme")
			if err != nil || open.Step != control.MoveCopied {
				t.Fatalf("the open move after the stalled mover: %+v, %v; want it at %s", open, err, control.MoveCopied)
			}
			// The lease's holder lets go; the move resumes and ends.
			b.env.Control.ReleaseMove(stolen)
			mv, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: c.to})
			if err != nil || mv.Step != control.MoveDone || mv.ID != open.ID {
				t.Fatalf("resume after the stalled mover: %+v, %v", mv, err)
			}
			if n := len(accounts(t, b)); n != 5 {
				t.Errorf("%d accounts after the move, want 5", n)
			}
			sourceGone(t, b, mv)
		})
	}
}

// TestMoveResumesAfterACrash: a runner that died holding the lease blocks
// the move until its lease runs out, then the move resumes; a runner
// whose renewals stop stops its own work when its lease could run out.
func TestMoveResumesAfterACrash(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.RLS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	to := control.Placement{Isolation: isolation.Schema}
	// A process began the move, took the lease and died.
	dead, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	// A lease long enough to be held when the resume below is tried,
	// however slow the machine; it is then made to run out (runOut).
	if _, err := b.env.Control.StartMove(ctx, "acme", to, dead, time.Minute); err != nil {
		t.Fatal(err)
	}
	m := b.mover(move.Options{})
	if _, err := m.Move(ctx, "acme", to); !running(err) {
		t.Fatalf("resume while the dead runner's lease lasts: %v, want the conflict", err)
	}
	runOut(t, b)
	deadline := time.Now().Add(30 * time.Second)
	var mv control.Move
	for {
		mv, err = m.Move(ctx, "acme", to)
		if !running(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead runner's lease did not run out within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || mv.Step != control.MoveDone {
		t.Fatalf("resume after the crash: %+v, %v", mv, err)
	}

	// Renewals stop (the runner stalls): it stops at its next step.
	back := control.Placement{Isolation: isolation.RLS}
	stalled := b.mover(move.Options{Lease: time.Second, AfterStep: func(step string) error {
		if step == control.MoveProvisioned {
			time.Sleep(1500 * time.Millisecond)
		}
		return nil
	}})
	move.StopRenewal(stalled)
	if _, err := stalled.Move(ctx, "acme", back); !errors.Is(err, control.ErrLeaseLost) {
		t.Fatalf("a runner whose renewals stopped: %v, want %v", err, control.ErrLeaseLost)
	}
	if mv, err := b.mover(move.Options{}).Move(ctx, "acme", back); err != nil || mv.Step != control.MoveDone {
		t.Fatalf("resume after the stalled runner: %+v, %v", mv, err)
	}
	if n := len(accounts(t, b)); n != 5 {
		t.Errorf("%d accounts after the moves, want 5", n)
	}
}

// runOut makes the lease of acme's open move run out now, as time would:
// what a lease allows is then tested without racing the clock of a busy
// machine.
func runOut(t *testing.T, b bundle) {
	t.Helper()
	_, err := b.env.Pools.Owner.Exec(context.Background(), `
		UPDATE bulkhead.tenant_moves m SET lease_until = clock_timestamp()
		FROM bulkhead.tenants t
		WHERE m.tenant_id = t.id AND t.slug = 'acme' AND m.finished_at IS NULL AND m.lease_until IS NOT NULL`)
	if err != nil {
		t.Fatalf("let the lease run out: %v", err)
	}
}
