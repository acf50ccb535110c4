// Package move moves a live tenant to another isolation strategy or
// server: it provisions the target, copies every tenant table while the
// tenant keeps serving, catches up with what was written meanwhile and
// verifies that source and target hold the same rows (a checksum of each
// table both databases compute), then pauses the tenant's transactions
// for a moment (they wait, they do not fail), copies and checks the rows
// written since that catch-up's snapshot — the pause does not grow with
// the tenant — closes the source and switches the tenant's placement in
// the control plane, and removes the source. Each
// step is recorded in the control plane (bulkhead.tenant_moves) and
// audited, so a move interrupted anywhere can be resumed or rolled back,
// and at every point the tenant is served from exactly one place.
package move

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Options tune a Mover; the zero value takes the defaults.
type Options struct {
	// CatchUp is the delta (rows to change) small enough to cut over
	// with: the cut-over copies it while the tenant waits.
	CatchUp int
	// Passes bounds the catch-up passes before the cut-over is tried
	// anyway.
	Passes int
	// LockWait bounds one wait of the cut-over for the tenant's running
	// transactions to end; a wait that runs out is tried again, up to
	// Attempts times.
	LockWait time.Duration
	// Attempts bounds the cut-over attempts.
	Attempts int
	// Pause bounds the cut-over's work once it holds the tenant's fence:
	// past it the cut-over is given up (the tenant's waiting requests go
	// on), the rows are caught up again and it is tried anew. It must be
	// below the lock_timeout the tenant's requests wait under, so that
	// they wait and never fail.
	Pause time.Duration
	// Lease is how long the move's lease runs (control: one runner per
	// open move, across processes) unless renewed; the runner renews it
	// every third of it, and stops its work once it could have run out. A
	// crashed runner's move can be resumed after it.
	Lease time.Duration
	// AfterStep, when set, runs after each recorded step; an error from
	// it stops the move there, as a killed mover would (fault tests).
	AfterStep func(step string) error
}

func (o Options) withDefaults() Options {
	if o.CatchUp <= 0 {
		o.CatchUp = 500
	}
	if o.Passes <= 0 {
		o.Passes = 5
	}
	if o.LockWait <= 0 {
		o.LockWait = time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Pause <= 0 {
		o.Pause = 2 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	return o
}

// Mover moves tenants. It is safe for concurrent use; moves of one tenant
// are serialised by the control plane (one open move per tenant).
type Mover struct {
	ctl        *control.Service
	strategies *isolation.Registry
	log        *slog.Logger
	opts       Options
	gate       chan struct{} // one copy at a time (enter)
	renew      time.Duration // how often a lease is renewed (Lease/3)
	unfenced   bool          // tests: no renewal and no self-fencing
}

// New returns a Mover working through the control plane and the
// strategies of the registry.
func New(ctl *control.Service, strategies *isolation.Registry, log *slog.Logger, opts Options) *Mover {
	m := &Mover{ctl: ctl, strategies: strategies, log: log, opts: opts.withDefaults(), gate: make(chan struct{}, 1)}
	m.renew = m.opts.Lease / 3
	return m
}

// Check validates a move's target: a strategy the deployment runs and
// allows (isolation.allowed), a server only for the database strategy and
// only one it has; else a *store.ValidationError. A strategy the move
// fence does not know (isolation.Fenceable) cannot be moved to.
func (m *Mover) Check(to control.Placement) error {
	if err := m.ctl.CheckPlacement("to", to); err != nil {
		return err
	}
	if !isolation.Fenceable(to.Isolation) {
		return &store.ValidationError{Field: "to", Msg: fmt.Sprintf("tenants cannot be moved to the %s strategy", to.Isolation)}
	}
	return nil
}

// Move moves the tenant called slug to the target, or resumes its open
// move there, and returns the finished move. It returns store.ErrNotFound
// for an unknown tenant, *store.ConflictError when the tenant is already
// there or a move elsewhere is open (wrapping a *control.MoveBusyError),
// and *store.ValidationError for a target the deployment does not run,
// *control.MoveRunningError (a *store.ConflictError) when another process
// runs the move (holds its lease). Any other
// error leaves the move open at its last step, recorded with the error:
// the tenant is served from exactly one placement, and Move (or Abort)
// can be run again.
func (m *Mover) Move(ctx context.Context, slug string, to control.Placement) (control.Move, error) {
	mv, run, err := m.Begin(ctx, slug, to)
	if err != nil {
		return mv, err
	}
	return run(ctx)
}

// Begin checks and records the move as Move does, returning the same
// errors, takes its lease (in the same transaction) and returns the open
// move and the function that runs it to its end (which may run on another
// goroutine, and returns as Move). That function must be called: it
// releases the lease (with a context already done, at once).
func (m *Mover) Begin(ctx context.Context, slug string, to control.Placement) (control.Move, func(context.Context) (control.Move, error), error) {
	if err := m.Check(to); err != nil {
		return control.Move{}, nil, err
	}
	runner, err := uuid.NewV7()
	if err != nil {
		return control.Move{}, nil, err
	}
	taken := time.Now() // the lease runs from no earlier than this
	mv, err := m.ctl.StartMove(ctx, slug, to, runner, m.opts.Lease)
	if err != nil {
		return control.Move{}, nil, err
	}
	return mv, func(ctx context.Context) (control.Move, error) {
		ctx, release := m.hold(ctx, mv, taken)
		defer release()
		if err := ctx.Err(); err != nil {
			return mv, fmt.Errorf("move %s (step %s): %w", slug, mv.Step, err)
		}
		mv, err := m.run(ctx, mv)
		if err != nil {
			err = leaseLost(ctx, err)
			m.ctl.FailMove(mv, err)
			return mv, fmt.Errorf("move %s (step %s): %w", slug, mv.Step, err)
		}
		return mv, nil
	}, nil
}

// errLeaseExpiring ends a runner's context when its lease could have
// run out (it was lost, or could not be renewed in time).
var errLeaseExpiring = errors.New("the move's lease could not be renewed")

// leaseLost is err, or control.ErrLeaseLost when the run stopped because
// its lease went.
func leaseLost(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errLeaseExpiring) && !errors.Is(err, control.ErrLeaseLost) {
		return fmt.Errorf("%w (%v)", control.ErrLeaseLost, err)
	}
	return err
}

// hold keeps mv's lease (mv.Runner's, taken no earlier than taken) while
// the returned context lives:
// it renews it every m.renew, and cancels the context once the lease
// could have run out without a renewal — the deadline is counted from
// before each renewal was sent, so by this process's clock the work stops
// before the control plane lets another runner take the move. release
// stops the renewals and gives the lease up.
func (m *Mover) hold(parent context.Context, mv control.Move, taken time.Time) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	if m.unfenced {
		return ctx, func() { cancel(nil); m.ctl.ReleaseMove(mv) }
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		// A margin of a sixth of the lease is left for the work in
		// flight to end.
		last := m.opts.Lease - m.opts.Lease/6
		deadline := taken.Add(last)
		t := time.NewTicker(m.renew)
		defer t.Stop()
		for {
			wait := time.Until(deadline)
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(wait):
				cancel(errLeaseExpiring)
				return
			case <-t.C:
			}
			sent := time.Now()
			rctx, rcancel := context.WithTimeout(ctx, time.Until(deadline))
			err := m.ctl.RenewMove(rctx, mv, m.opts.Lease)
			rcancel()
			switch {
			case err == nil:
				deadline = sent.Add(last)
			case errors.Is(err, control.ErrLeaseLost):
				m.log.Error("tenant move lease lost: stopping", "tenant", mv.Slug, "move_id", mv.ID)
				cancel(errLeaseExpiring)
				return
			default:
				// Tried again at the next tick, while the lease lasts.
				m.log.Warn("renew the tenant move lease", "tenant", mv.Slug, "move_id", mv.ID, "err", err)
			}
		}
	}()
	return ctx, func() {
		close(done)
		<-stopped
		cancel(nil)
		m.ctl.ReleaseMove(mv)
	}
}

func (m *Mover) after(step string) error {
	if m.opts.AfterStep != nil {
		return m.opts.AfterStep(step)
	}
	return nil
}

func (m *Mover) run(ctx context.Context, mv control.Move) (control.Move, error) {
	if mv.Step == control.MoveStarted {
		if err := m.after(mv.Step); err != nil {
			return mv, err
		}
	}
	var err error
	for mv.FinishedAt == nil {
		switch mv.Step {
		case control.MoveStarted:
			mv, err = m.provision(ctx, mv)
		case control.MoveProvisioned:
			mv, err = m.copy(ctx, mv)
		case control.MoveCopied:
			mv, err = m.cutover(ctx, mv)
		case control.MoveSwitched:
			mv, err = m.finish(ctx, mv)
		default:
			return mv, fmt.Errorf("move %s at unknown step %q", mv.ID, mv.Step)
		}
		if err != nil {
			return mv, err
		}
		m.log.Info("tenant move step", "tenant", mv.Slug, "move_id", mv.ID, "step", mv.Step)
		if err := m.after(mv.Step); err != nil {
			return mv, err
		}
	}
	return mv, nil
}

// provision gives the target storage at the migration head. Whatever an
// earlier attempt left there is removed first: nothing serves from it.
func (m *Mover) provision(ctx context.Context, mv control.Move) (control.Move, error) {
	target := mv.Target()
	st, err := m.strategies.For(target)
	if err != nil {
		return mv, err
	}
	// The deployment may have no tenant of the target's strategy yet, and
	// migrate sets up only the strategies in use. Setup is idempotent.
	if err := st.Setup(ctx); err != nil {
		return mv, fmt.Errorf("set up the %s strategy: %w", target.Strategy, err)
	}
	if err := st.Deprovision(ctx, target); err != nil {
		return mv, fmt.Errorf("clear the target: %w", err)
	}
	placed, err := st.Provision(ctx, target)
	if err != nil {
		return mv, fmt.Errorf("provision the target: %w", err)
	}
	mv.To = control.Placement{Isolation: placed.Strategy, Server: placed.Server, Placement: placed.Placement}
	if _, err := st.Migrate(ctx, placed); err != nil {
		return mv, fmt.Errorf("migrate the target: %w", err)
	}
	return m.ctl.SetMoveStep(ctx, mv, control.MoveProvisioned)
}

// migrate brings t's storage to the migration head on its strategy.
func (m *Mover) migrate(ctx context.Context, t isolation.Tenant) (int64, error) {
	st, err := m.strategies.For(t)
	if err != nil {
		return 0, err
	}
	return st.Migrate(ctx, t)
}

// deprovision removes t's storage on its strategy.
func (m *Mover) deprovision(ctx context.Context, t isolation.Tenant) error {
	st, err := m.strategies.For(t)
	if err != nil {
		return err
	}
	return st.Deprovision(ctx, t)
}

// owner returns t's strategy as an OwnerRunner, or an error when its
// tenants cannot be moved.
func (m *Mover) owner(t isolation.Tenant) (isolation.OwnerRunner, error) {
	s, err := m.strategies.Named(t.Strategy)
	if err != nil {
		return nil, err
	}
	o, ok := s.(isolation.OwnerRunner)
	if !ok || !isolation.Fenceable(t.Strategy) {
		return nil, fmt.Errorf("strategy %s cannot be moved from or to", t.Strategy)
	}
	return o, nil
}

// both runs fn with an owner transaction in the source and one in the
// target, the source's opened first; the target's commits first.
func (m *Mover) both(ctx context.Context, mv control.Move, srcSetup string, fn func(src, dst pgx.Tx) error) error {
	so, err := m.owner(mv.Source())
	if err != nil {
		return err
	}
	do, err := m.owner(mv.Target())
	if err != nil {
		return err
	}
	return so.RunOwner(ctx, mv.Source(), func(src pgx.Tx) error {
		if srcSetup != "" {
			if _, err := src.Exec(ctx, srcSetup); err != nil {
				return err
			}
		}
		if _, err := src.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
			return err
		}
		return do.RunOwner(ctx, mv.Target(), func(dst pgx.Tx) error {
			if _, err := dst.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
				return err
			}
			return fn(src, dst)
		})
	})
}

// enter waits for the Mover's turn to copy: a pass holds two owner
// connections at once, a cut-over three (the catch-up's snapshot, and the
// pair under the fence), so moves take turns rather than starve each
// other of the owner pool's few. The function it returns ends the turn.
func (m *Mover) enter(ctx context.Context) (func(), error) {
	select {
	case m.gate <- struct{}{}:
		return func() { <-m.gate }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pass makes the target equal a snapshot of the source and reports how
// many rows it changed.
func (m *Mover) pass(ctx context.Context, mv control.Move) (int, error) {
	leave, err := m.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer leave()
	var n int
	err = m.both(ctx, mv, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`, func(src, dst pgx.Tx) error {
		tables, err := tablesOf(ctx, src)
		if err != nil {
			return err
		}
		d, err := diff(ctx, src, dst, tables, mv.TenantID)
		if err != nil {
			return err
		}
		n = d.n
		return apply(ctx, src, dst, tables, mv.TenantID, d)
	})
	return n, err
}

// copy copies the source to the target while the tenant serves, then
// catches up until the rows written meanwhile are few.
func (m *Mover) copy(ctx context.Context, mv control.Move) (control.Move, error) {
	for i := 0; i < m.opts.Passes; i++ {
		n, err := m.pass(ctx, mv)
		if err != nil {
			return mv, fmt.Errorf("copy: %w", err)
		}
		mv.RowsCopied += int64(n)
		if n <= m.opts.CatchUp {
			break
		}
	}
	return m.ctl.SetMoveStep(ctx, mv, control.MoveCopied)
}

// MismatchError says the target did not hold the source's rows after a
// catch-up or the cut-over's copy: the move stays before its switch.
type MismatchError struct{ Detail string }

func (e *MismatchError) Error() string { return "verify: source and target differ: " + e.Detail }

// errLockBusy is a cut-over that could not take the fence in time.
var errLockBusy = errors.New("the tenant's transactions did not pause in time")

// cutover pauses the tenant, copies the last rows, verifies, closes the
// source and switches the placement. A source in the control plane's
// database is closed and switched in one transaction; any other is closed
// first and switched right after, and a crash between the two leaves the
// tenant refused (not lost) until the move is resumed.
func (m *Mover) cutover(ctx context.Context, mv control.Move) (control.Move, error) {
	// A migrate since the target was provisioned reached the source (a
	// tenant's placement) but not the target: bring it to the head too.
	if _, err := m.migrate(ctx, mv.Target()); err != nil {
		return mv, fmt.Errorf("migrate the target: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < m.opts.Attempts; attempt++ {
		next, err := m.cutoverOnce(ctx, mv)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, errLockBusy) {
			return mv, err
		}
		// The delta grew while we waited: the next attempt catches up
		// again outside the pause.
		mv.RowsCopied = next.RowsCopied
		lastErr = err
	}
	return mv, lastErr
}

// cutoverOnce catches up and verifies while the tenant serves, holding
// the catch-up's snapshot of the source open, then takes the fence and
// copies (and checks) only what was written since that snapshot. On
// errLockBusy the move it returns counts the rows the catch-up copied.
func (m *Mover) cutoverOnce(outer context.Context, mv control.Move) (control.Move, error) {
	leave, err := m.enter(outer)
	if err != nil {
		return mv, err
	}
	defer leave()
	source := mv.Source()
	so, err := m.owner(source)
	if err != nil {
		return mv, err
	}
	do, err := m.owner(mv.Target())
	if err != nil {
		return mv, err
	}
	inControl := isolation.InControlDatabase(source.Strategy)
	next := mv
	err = so.RunOwner(outer, source, func(ref pgx.Tx) error {
		if _, err := ref.Exec(outer, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
			return err
		}
		if _, err := ref.Exec(outer, `SET LOCAL TimeZone = 'UTC'`); err != nil {
			return err
		}
		// The snapshot's xmin: every transaction before it ended
		// before the snapshot, so what the fence must copy is what was
		// written by it or later.
		// On Citus the rows live on workers, whose transaction ids are
		// not the coordinator's: there the cut-over compares every row
		// (lo < 0), as slow as the tenant is large, but exact.
		var xmin int64
		if err := ref.QueryRow(outer, `SELECT CASE WHEN EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN -1
			ELSE pg_snapshot_xmin(pg_current_snapshot())::text::bigint END`).Scan(&xmin); err != nil {
			return fmt.Errorf("read the snapshot: %w", err)
		}
		lo := int64(-1)
		if xmin >= 0 {
			lo = xmin & 0xffffffff
		}
		var tables []table
		var counts map[string]int64
		err := do.RunOwner(outer, mv.Target(), func(dst pgx.Tx) error {
			if _, err := dst.Exec(outer, `SET LOCAL TimeZone = 'UTC'`); err != nil {
				return err
			}
			var err error
			if tables, err = tablesOf(outer, ref); err != nil {
				return err
			}
			d, err := diff(outer, ref, dst, tables, mv.TenantID)
			if err != nil {
				return err
			}
			if err := apply(outer, ref, dst, tables, mv.TenantID, d); err != nil {
				return err
			}
			next.RowsCopied += int64(d.n)
			if lo < 0 {
				return same(outer, ref, dst, tables, mv.TenantID)
			}
			counts, err = verifyAll(outer, ref, dst, tables, mv.TenantID)
			return err
		})
		if err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		return m.fenced(outer, &next, tables, lo, counts, inControl)
	})
	if err != nil {
		return next, err
	}
	if !inControl {
		if err := m.after("closed"); err != nil {
			return mv, err
		}
		return m.ctl.SwitchMove(outer, next)
	}
	return next, nil
}

// fenced takes the tenant's fence in the source, copies what was written
// since the snapshot whose xmin had the low bits lo (the target equalling
// the source as of it, holding counts rows per table; with lo < 0,
// whatever differs), checks, closes the source and, for a source in
// the control plane's database, switches the placement, recording the
// pause in next.
func (m *Mover) fenced(outer context.Context, next *control.Move, tables []table, lo int64, counts map[string]int64, inControl bool) error {
	source := next.Source()
	wait := "SET LOCAL lock_timeout = " + strconv.FormatInt(m.opts.LockWait.Milliseconds(), 10)
	return m.both(outer, *next, "", func(src, dst pgx.Tx) error {
		if _, err := src.Exec(outer, wait); err != nil {
			return err
		}
		start := time.Now()
		if err := isolation.Cutover(outer, src, source); err != nil {
			if lockTimeout(err) {
				return errLockBusy
			}
			return err
		}
		// The work under the fence is bounded by the pause; the commits
		// are not, so that no commit's outcome is left in doubt.
		ctx, cancel := context.WithTimeout(outer, m.opts.Pause)
		defer cancel()
		err := m.cutoverWork(ctx, src, dst, source, tables, lo, counts, next, inControl, start)
		if err != nil && ctx.Err() != nil && outer.Err() == nil {
			return fmt.Errorf("%w: the cut-over took longer than %s", errLockBusy, m.opts.Pause)
		}
		return err
	})
}

// cutoverWork copies the last rows and checks them (since), closes the
// source and, for a source in the control plane's database, switches the
// placement (in src), recording the pause since start.
func (m *Mover) cutoverWork(ctx context.Context, src, dst pgx.Tx, source isolation.Tenant, tables []table, lo int64, counts map[string]int64, next *control.Move, inControl bool, start time.Time) error {
	if _, err := src.Exec(ctx, `SET LOCAL lock_timeout = 0`); err != nil {
		return err
	}
	waited := time.Since(start)
	var n int
	var err error
	if lo >= 0 {
		n, err = since(ctx, src, dst, tables, next.TenantID, lo, counts)
	} else {
		n, err = everything(ctx, src, dst, tables, next.TenantID)
	}
	if err != nil {
		return err
	}
	next.RowsCopied += int64(n)
	if err := isolation.Close(ctx, src, source); err != nil {
		return err
	}
	ms := time.Since(start).Milliseconds()
	next.PauseMS = &ms
	// The pause is the wait for the tenant's running transactions to
	// end, then the work under the fence.
	m.log.Info("tenant move cut-over", "tenant", next.Slug, "move_id", next.ID, "pause_ms", ms,
		"wait_ms", waited.Milliseconds(), "rows", n, "every_row", lo < 0)
	if inControl {
		return control.SwitchPlacement(ctx, src, next)
	}
	return nil
}

// finish removes the source, which serves no one since the switch.
func (m *Mover) finish(ctx context.Context, mv control.Move) (control.Move, error) {
	if err := m.deprovision(ctx, mv.Source()); err != nil {
		return mv, fmt.Errorf("remove the source: %w", err)
	}
	return m.ctl.FinishMove(ctx, mv, control.MoveDone)
}

// Abort rolls back the open move of the tenant called slug: the source,
// reopened if it was closed, keeps serving, and the target is removed. A
// move past its switch is a *store.ConflictError (resume it instead);
// with no open move, store.ErrNotFound.
// Another process running the move is a *control.MoveRunningError: the
// abort takes the move's lease first, and holds it to the end.
func (m *Mover) Abort(ctx context.Context, slug string) (control.Move, error) {
	runner, err := uuid.NewV7()
	if err != nil {
		return control.Move{}, err
	}
	taken := time.Now()
	mv, err := m.ctl.ClaimMove(ctx, slug, runner, m.opts.Lease)
	if err != nil {
		return mv, err
	}
	ctx, release := m.hold(ctx, mv, taken)
	defer release()
	mv, err = m.abort(ctx, slug, mv)
	return mv, leaseLost(ctx, err)
}

func (m *Mover) abort(ctx context.Context, slug string, mv control.Move) (control.Move, error) {
	if mv.Step == control.MoveSwitched {
		return mv, &store.ConflictError{Constraint: "tenant_move", Msg: "the move of " + slug + " has switched already: run it again to finish"}
	}
	so, err := m.owner(mv.Source())
	if err != nil {
		return mv, err
	}
	err = so.RunOwner(ctx, mv.Source(), func(tx pgx.Tx) error {
		closed, err := isolation.Closed(ctx, tx, mv.Source())
		if err != nil || !closed {
			return err
		}
		return isolation.Reopen(ctx, tx, mv.Source())
	})
	if err != nil {
		return mv, fmt.Errorf("reopen the source: %w", err)
	}
	if err := m.deprovision(ctx, mv.Target()); err != nil {
		return mv, fmt.Errorf("remove the target: %w", err)
	}
	return m.ctl.FinishMove(ctx, mv, control.MoveRolledBack)
}

func lockTimeout(err error) bool {
	var code interface{ SQLState() string }
	return errors.As(err, &code) && code.SQLState() == "55P03"
}
