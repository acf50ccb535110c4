package control_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/app/store"
)

func newRunner(t *testing.T) uuid.UUID {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func isRunning(err error) bool {
	var r *control.MoveRunningError
	var c *store.ConflictError
	return errors.As(err, &r) && errors.As(err, &c) && c.Msg == control.MoveRunningMsg
}

// expire makes the lease of the tenant's open move run out now, as time
// would (no test races the clock of a busy machine), and claims the move
// for probe.
func expire(t *testing.T, svc *control.Service, pools *postgres.Pools, slug string, probe uuid.UUID) control.Move {
	t.Helper()
	runOut(t, pools, slug)
	m, err := svc.ClaimMove(context.Background(), slug, probe, time.Minute)
	if err != nil {
		t.Fatalf("claim once the lease ran out: %v", err)
	}
	return m
}

// runOut makes the lease of the tenant's open move run out now.
func runOut(t *testing.T, pools *postgres.Pools, slug string) {
	t.Helper()
	_, err := pools.Owner.Exec(context.Background(), `
		UPDATE bulkhead.tenant_moves m SET lease_until = clock_timestamp()
		FROM bulkhead.tenants t
		WHERE m.tenant_id = t.id AND t.slug = $1 AND m.finished_at IS NULL AND m.lease_until IS NOT NULL`, slug)
	if err != nil {
		t.Fatalf("let the lease run out: %v", err)
	}
}

// TestMoveLease: one runner per open move. A second start or claim is the
// conflict; every step write is fenced by the lease, in the same
// statement, so a runner whose lease ran out cannot record a step,
// switch or finish; a released or expired lease can be taken.
func TestMoveLease(t *testing.T) {
	t.Parallel()
	svc, _, pools := setup(t)
	ctx := control.WithActor(context.Background(), "test")
	if _, err := svc.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	to := control.Placement{Isolation: "schema"}
	r1, r2, r3 := newRunner(t), newRunner(t), newRunner(t)
	m1, err := svc.StartMove(ctx, "acme", to, r1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Runner != r1 {
		t.Fatalf("started move holds runner %s, want %s", m1.Runner, r1)
	}
	if _, err := svc.StartMove(ctx, "acme", to, r2, time.Minute); !isRunning(err) {
		t.Fatalf("a second start (resume) while r1 holds the lease: %v, want the conflict", err)
	}
	if _, err := svc.ClaimMove(ctx, "acme", r2, time.Minute); !isRunning(err) {
		t.Fatalf("a claim (abort) while r1 holds the lease: %v, want the conflict", err)
	}
	if err := svc.RenewMove(ctx, m1, time.Minute); err != nil {
		t.Fatalf("renew: %v", err)
	}
	m1.To.Placement = "t_acme"
	if m1, err = svc.SetMoveStep(ctx, m1, control.MoveProvisioned); err != nil {
		t.Fatalf("step while holding the lease: %v", err)
	}

	// r1 stops renewing; r2 takes the move once the lease has run out.
	m2 := expire(t, svc, pools, "acme", r2)
	if m2.ID != m1.ID || m2.Step != control.MoveProvisioned {
		t.Fatalf("claimed %+v, want the move at %s", m2, control.MoveProvisioned)
	}
	for what, err := range map[string]error{
		"renew":  svc.RenewMove(ctx, m1, time.Second),
		"step":   second(svc.SetMoveStep(ctx, m1, control.MoveCopied)),
		"switch": second(svc.SwitchMove(ctx, m1)),
		"finish": second(svc.FinishMove(ctx, m1, control.MoveRolledBack)),
	} {
		if !errors.Is(err, control.ErrLeaseLost) {
			t.Errorf("%s with a lost lease: %v, want %v", what, err, control.ErrLeaseLost)
		}
	}
	svc.FailMove(m1, errors.New("stale"))
	tn, err := svc.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if tn.Isolation != "rls" {
		t.Fatalf("a runner with a lost lease switched the tenant to %s", tn.Isolation)
	}
	open, err := svc.OpenMove(ctx, "acme")
	if err != nil || open.Step != control.MoveProvisioned || open.Error != "" {
		t.Fatalf("open move %+v, %v: want it at %s, no error from the stale runner", open, err, control.MoveProvisioned)
	}

	// An expired lease nobody took yet is lost too: no switch.
	if err := svc.RenewMove(ctx, m2, time.Minute); err != nil {
		t.Fatal(err)
	}
	runOut(t, pools, "acme")
	if _, err := svc.SwitchMove(ctx, m2); !errors.Is(err, control.ErrLeaseLost) {
		t.Fatalf("switch after the lease ran out: %v, want %v", err, control.ErrLeaseLost)
	}
	m3 := expire(t, svc, pools, "acme", r3)

	// Released, the lease can be taken at once; the holder steps on.
	svc.ReleaseMove(m3)
	m4, err := svc.ClaimMove(ctx, "acme", r1, time.Minute)
	if err != nil {
		t.Fatalf("claim after a release: %v", err)
	}
	if m4, err = svc.SetMoveStep(ctx, m4, control.MoveCopied); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.FinishMove(ctx, m4, control.MoveRolledBack); err != nil {
		t.Fatalf("finish while holding the lease: %v", err)
	}
	if _, err := svc.OpenMove(ctx, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the finish: %v, want no open move", err)
	}
}

func second[T any](_ T, err error) error { return err }
