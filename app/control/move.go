package control

// The control plane's record of live moves (bulkhead tenant move): the
// steps a mover has done, so that a mover killed at any point can be
// resumed or rolled back, and the one transaction that switches a
// tenant's placement.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Steps of a move, in order; a move ends done or rolled back.
const (
	MoveStarted     = "started"
	MoveProvisioned = "provisioned"
	MoveCopied      = "copied"
	MoveSwitched    = "switched"
	MoveDone        = "done"
	MoveRolledBack  = "rolled_back"
)

// Audited actions of a move.
const (
	ActionMoveStart    = "tenant.move.start"
	ActionMoveStep     = "tenant.move.step"
	ActionMoveSwitch   = "tenant.move.switch"
	ActionMoveDone     = "tenant.move.done"
	ActionMoveFail     = "tenant.move.fail"
	ActionMoveRollback = "tenant.move.rollback"
)

// Move is one move of a tenant as the control plane records it.
type Move struct {
	ID         uuid.UUID  `json:"id"`
	TenantID   uuid.UUID  `json:"tenant_id"`
	Slug       string     `json:"tenant"`
	From       Placement  `json:"from"`
	To         Placement  `json:"to"`
	Step       string     `json:"step"`
	RowsCopied int64      `json:"rows_copied"`
	PauseMS    *int64     `json:"pause_ms,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      string     `json:"error,omitempty"`
	// Runner is the lease this process holds on the move (zero: none):
	// every step recorded with it is conditional on holding it still.
	Runner uuid.UUID `json:"-"`
}

// Placement is where a tenant lives: its strategy, server and schema or
// database.
type Placement struct {
	Isolation string `json:"isolation"`
	Server    string `json:"server,omitempty"`
	Placement string `json:"placement,omitempty"`
}

// Tenant returns the isolation layer's view of t placed at p.
func (p Placement) Tenant(id uuid.UUID, slug string) isolation.Tenant {
	return isolation.Tenant{ID: id, Slug: slug, Strategy: p.Isolation, Server: p.Server, Placement: p.Placement}
}

// Source and Target are the move's two placements as the isolation layer
// binds them.
func (m Move) Source() isolation.Tenant { return m.From.Tenant(m.TenantID, m.Slug) }

// Target is the placement the move copies to.
func (m Move) Target() isolation.Tenant { return m.To.Tenant(m.TenantID, m.Slug) }

const moveColumns = `m.id, m.tenant_id, t.slug, m.from_isolation, m.from_server, m.from_placement,
	m.to_isolation, m.to_server, m.to_placement, m.step, m.rows_copied, m.pause_ms,
	m.started_at, m.updated_at, m.finished_at, m.error`

func scanMove(row pgx.Row) (Move, error) {
	var m Move
	err := row.Scan(&m.ID, &m.TenantID, &m.Slug, &m.From.Isolation, &m.From.Server, &m.From.Placement,
		&m.To.Isolation, &m.To.Server, &m.To.Placement, &m.Step, &m.RowsCopied, &m.PauseMS,
		&m.StartedAt, &m.UpdatedAt, &m.FinishedAt, &m.Error)
	return m, store.Translate(err)
}

// OpenMove returns the unfinished move of the tenant called slug, or
// store.ErrNotFound.
func (s *Service) OpenMove(ctx context.Context, slug string) (Move, error) {
	db, err := s.reader()
	if err != nil {
		return Move{}, err
	}
	return scanMove(db.QueryRow(ctx, `SELECT `+moveColumns+`
		FROM bulkhead.tenant_moves m JOIN bulkhead.tenants t ON t.id = m.tenant_id
		WHERE t.slug = $1 AND m.finished_at IS NULL`, slug))
}

// LastMove returns the latest move of the tenant called slug, finished or
// not, or store.ErrNotFound.
func (s *Service) LastMove(ctx context.Context, slug string) (Move, error) {
	db, err := s.reader()
	if err != nil {
		return Move{}, err
	}
	return scanMove(db.QueryRow(ctx, `SELECT `+moveColumns+`
		FROM bulkhead.tenant_moves m JOIN bulkhead.tenants t ON t.id = m.tenant_id
		WHERE t.slug = $1 ORDER BY m.started_at DESC, m.id DESC LIMIT 1`, slug))
}

// MoveBusyError says the tenant has an unfinished move to somewhere else.
// It is a *store.ConflictError (Unwrap).
type MoveBusyError struct{ Move Move }

// Unwrap is the conflict the API answers (409).
func (e *MoveBusyError) Unwrap() error {
	return &store.ConflictError{Constraint: "tenant_moves_open", Msg: e.Error()}
}

func (e *MoveBusyError) Error() string {
	return fmt.Sprintf("tenant %s has a move to %s in progress (step %s): resume it with the same target or roll it back",
		e.Move.Slug, describe(e.Move.To), e.Move.Step)
}

func describe(p Placement) string {
	if p.Server != "" {
		return p.Isolation + " on server " + p.Server
	}
	return p.Isolation
}

// MoveRunningMsg is what a second runner of an open move is told.
const MoveRunningMsg = "a move of this tenant is already running in another process"

// MoveRunningError says another runner holds the lease of the tenant's
// open move (until Until, unless it renews it). It is a
// *store.ConflictError (Unwrap), answered 409.
type MoveRunningError struct {
	Move  Move
	Until time.Time
}

// Unwrap is the conflict the API answers (409).
func (e *MoveRunningError) Unwrap() error {
	return &store.ConflictError{Constraint: "tenant_moves_lease", Msg: MoveRunningMsg}
}

func (e *MoveRunningError) Error() string {
	return fmt.Sprintf("tenant %s: %s (move %s, step %s; its lease runs to %s unless renewed)",
		e.Move.Slug, MoveRunningMsg, e.Move.ID, e.Move.Step, e.Until.UTC().Format(time.RFC3339))
}

// ErrLeaseLost is a step refused because the runner no longer holds the
// move's lease: it expired (the runner stalled past it) and may be
// another's now. The runner must stop; the move stays where the control
// plane records it.
var ErrLeaseLost = errors.New("this process no longer holds the move's lease: another process may be running it")

// claim takes the lease of the open move id for runner for ttl, in tx:
// free, expired or already runner's. Held by another, a *MoveRunningError.
func claim(ctx context.Context, tx pgx.Tx, m *Move, runner uuid.UUID, ttl time.Duration) error {
	var (
		holder *uuid.UUID
		until  *time.Time
	)
	// FOR UPDATE: two claimers queue here, and the second sees the
	// first's lease.
	if err := tx.QueryRow(ctx, `SELECT runner, lease_until FROM bulkhead.tenant_moves
		WHERE id = $1 AND finished_at IS NULL FOR UPDATE`, m.ID).Scan(&holder, &until); err != nil {
		return store.Translate(err)
	}
	var took bool
	err := tx.QueryRow(ctx, `
		UPDATE bulkhead.tenant_moves SET runner = $2, lease_until = clock_timestamp() + make_interval(secs => $3)
		WHERE id = $1 AND finished_at IS NULL AND (runner IS NULL OR runner = $2 OR lease_until <= clock_timestamp())
		RETURNING true`, m.ID, runner, ttl.Seconds()).Scan(&took)
	if errors.Is(err, pgx.ErrNoRows) {
		var u time.Time
		if until != nil {
			u = *until
		}
		return &MoveRunningError{Move: *m, Until: u}
	}
	if err != nil {
		return store.Translate(err)
	}
	m.Runner = runner
	return nil
}

// ClaimMove takes the lease of the tenant called slug's open move for
// runner, for ttl, and returns the move: store.ErrNotFound with no open
// move, a *MoveRunningError when another runner holds it.
func (s *Service) ClaimMove(ctx context.Context, slug string, runner uuid.UUID, ttl time.Duration) (Move, error) {
	db, err := s.writer()
	if err != nil {
		return Move{}, err
	}
	var m Move
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		m, err = scanMove(tx.QueryRow(ctx, `SELECT `+moveColumns+`
			FROM bulkhead.tenant_moves m JOIN bulkhead.tenants t ON t.id = m.tenant_id
			WHERE t.slug = $1 AND m.finished_at IS NULL`, slug))
		if err != nil {
			return err
		}
		return claim(ctx, tx, &m, runner, ttl)
	})
	if err != nil {
		return Move{}, err
	}
	return m, nil
}

// RenewMove extends m's lease by ttl from now, if m.Runner still holds it
// (ErrLeaseLost if not: it expired). A finished move's lease, until its
// runner releases it, can be renewed too (and means nothing: only open
// moves are claimed), so that a renewal racing the finish is no error.
func (s *Service) RenewMove(ctx context.Context, m Move, ttl time.Duration) error {
	db, err := s.writer()
	if err != nil {
		return err
	}
	tag, err := db.Exec(ctx, `UPDATE bulkhead.tenant_moves SET lease_until = clock_timestamp() + make_interval(secs => $3)
		WHERE id = $1 AND runner = $2 AND lease_until > clock_timestamp()`, m.ID, m.Runner, ttl.Seconds())
	if err != nil {
		return store.Translate(err)
	}
	if tag.RowsAffected() != 1 {
		return ErrLeaseLost
	}
	return nil
}

// ReleaseMove gives m's lease up, if m.Runner holds it, so that the move
// can be resumed or rolled back at once (a finished move's too). It runs on its own context: the
// caller's may have ended.
func (s *Service) ReleaseMove(m Move) {
	if m.Runner == uuid.Nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := s.writer()
	if err == nil {
		_, err = db.Exec(ctx, `UPDATE bulkhead.tenant_moves SET runner = NULL, lease_until = NULL
			WHERE id = $1 AND runner = $2`, m.ID, m.Runner)
	}
	if err != nil {
		// Not fatal: the lease runs out.
		s.log.Warn("release move lease", "tenant", m.Slug, "move_id", m.ID, "err", err)
	}
}

// StartMove records a move of the tenant called slug to (to.Isolation,
// to.Server) and returns it; if one to the same target is open, it returns
// that one (a resume). One to another target is a *MoveBusyError; a target
// where the tenant already is, a *store.ConflictError. With a runner
// (not uuid.Nil), the move's lease is taken for it, for ttl, in the same
// transaction: held by another, a *MoveRunningError.
func (s *Service) StartMove(ctx context.Context, slug string, to Placement, runner uuid.UUID, ttl time.Duration) (Move, error) {
	db, err := s.writer()
	if err != nil {
		return Move{}, err
	}
	var m Move
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// The tenant's row, locked: two movers starting at once queue here.
		t, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM bulkhead.tenants WHERE slug = $1 FOR UPDATE`, slug))
		if err != nil {
			return err
		}
		open, err := scanMove(tx.QueryRow(ctx, `SELECT `+moveColumns+`
			FROM bulkhead.tenant_moves m JOIN bulkhead.tenants t ON t.id = m.tenant_id
			WHERE m.tenant_id = $1 AND m.finished_at IS NULL`, t.ID))
		switch {
		case err == nil:
			if open.To.Isolation != to.Isolation || (to.Server != "" && open.To.Server != to.Server) {
				return &MoveBusyError{Move: open}
			}
			m = open
			if runner == uuid.Nil {
				return nil
			}
			return claim(ctx, tx, &m, runner, ttl)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if t.Status != StatusActive && t.Status != StatusSuspended {
			return &store.ConflictError{Constraint: "tenant_status", Msg: "tenant " + slug + " is " + t.Status}
		}
		if t.Isolation == to.Isolation && (to.Server == "" || to.Server == t.Server) {
			return &store.ConflictError{Constraint: "tenant_placement", Msg: "tenant " + slug + " is already on " + describe(Placement{t.Isolation, t.Server, ""})}
		}
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		m, err = scanMove(tx.QueryRow(ctx, `
			WITH m AS (
				INSERT INTO bulkhead.tenant_moves (id, tenant_id, from_isolation, from_server, from_placement, to_isolation, to_server, step)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *)
			SELECT `+moveColumns+` FROM m JOIN bulkhead.tenants t ON t.id = m.tenant_id`,
			id, t.ID, t.Isolation, t.Server, t.Placement, to.Isolation, to.Server, MoveStarted))
		if err != nil {
			return err
		}
		if runner != uuid.Nil {
			if err := claim(ctx, tx, &m, runner, ttl); err != nil {
				return err
			}
		}
		_, err = appendAudit(ctx, tx, Event{Action: ActionMoveStart, Tenants: []string{slug}, Detail: moveDetail(m)})
		return err
	})
	if err != nil {
		return Move{}, fmt.Errorf("start move of %s: %w", slug, err)
	}
	return m, nil
}

func moveDetail(m Move) map[string]any {
	return map[string]any{"move_id": m.ID, "from": m.From, "to": m.To, "step": m.Step}
}

// SetMoveStep records that m reached step (with the target's placement
// and the rows copied so far), audited.
func (s *Service) SetMoveStep(ctx context.Context, m Move, step string) (Move, error) {
	db, err := s.writer()
	if err != nil {
		return m, err
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		if err := setStep(ctx, tx, &m, step); err != nil {
			return err
		}
		_, err = appendAudit(ctx, tx, Event{Action: ActionMoveStep, Tenants: []string{m.Slug}, Detail: moveDetail(m)})
		return err
	})
	if err != nil {
		return m, fmt.Errorf("record move step %s of %s: %w", step, m.Slug, err)
	}
	return m, nil
}

// setStep records step, fenced: only while m.Runner holds the move's
// lease (unexpired), in the same statement; else ErrLeaseLost.
func setStep(ctx context.Context, tx pgx.Tx, m *Move, step string) error {
	var leased bool
	err := tx.QueryRow(ctx, `
		UPDATE bulkhead.tenant_moves
		SET step = $2, to_server = $3, to_placement = $4, rows_copied = $5, pause_ms = $6, error = '', updated_at = now()
		WHERE id = $1 AND finished_at IS NULL
		RETURNING coalesce(runner = $7 AND lease_until > clock_timestamp(), false)`,
		m.ID, step, m.To.Server, m.To.Placement, m.RowsCopied, m.PauseMS, m.Runner).Scan(&leased)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("move %s is no longer open", m.ID)
	}
	if err != nil {
		return store.Translate(err)
	}
	if !leased {
		// Undone with the transaction (the caller's returns this).
		return ErrLeaseLost
	}
	m.Step = step
	return nil
}

// FailMove records err against m (it stays open, at its step), audited,
// if m.Runner still holds the move (a runner that lost it does not
// overwrite what another records). It runs on its own context: the
// caller's may be what failed.
func (s *Service) FailMove(m Move, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := s.writer()
	if err == nil {
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE bulkhead.tenant_moves SET error = $2, updated_at = now() WHERE id = $1 AND runner = $3`,
				m.ID, cause.Error(), m.Runner)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			d := moveDetail(m)
			d["error"] = cause.Error()
			_, err = appendAudit(ctx, tx, Event{Action: ActionMoveFail, Tenants: []string{m.Slug}, Detail: d})
			return err
		})
	}
	if err != nil {
		s.log.Error("record move failure", "tenant", m.Slug, "move_id", m.ID, "cause", cause, "err", err)
	}
}

// SwitchPlacement points the tenant of m at m's target, records the step
// switched and audits it, all within tx and only while m.Runner holds the
// move's lease (else ErrLeaseLost, and tx must roll back), a transaction on the control
// plane's database (for a source in that database, the cut-over's own
// transaction, so that closing the source and switching are one commit).
func SwitchPlacement(ctx context.Context, tx pgx.Tx, m *Move) error {
	tag, err := tx.Exec(ctx, `
		UPDATE bulkhead.tenants SET isolation = $2, server = $3, placement = $4, updated_at = now()
		WHERE id = $1 AND isolation = $5 AND server = $6 AND placement = $7`,
		m.TenantID, m.To.Isolation, m.To.Server, m.To.Placement, m.From.Isolation, m.From.Server, m.From.Placement)
	if err != nil {
		return store.Translate(err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("switch %s: the tenant is no longer at its source placement", m.Slug)
	}
	if err := setStep(ctx, tx, m, MoveSwitched); err != nil {
		return err
	}
	_, err = appendAudit(ctx, tx, Event{Action: ActionMoveSwitch, Tenants: []string{m.Slug}, Detail: moveDetail(*m)})
	return err
}

// SwitchMove is SwitchPlacement in a transaction of its own (a source in
// another database, closed already).
func (s *Service) SwitchMove(ctx context.Context, m Move) (Move, error) {
	db, err := s.writer()
	if err != nil {
		return m, err
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return SwitchPlacement(ctx, tx, &m) })
	if err != nil {
		return m, fmt.Errorf("switch %s: %w", m.Slug, err)
	}
	return m, nil
}

// FinishMove ends m at step (MoveDone or MoveRolledBack), audited.
func (s *Service) FinishMove(ctx context.Context, m Move, step string) (Move, error) {
	db, err := s.writer()
	if err != nil {
		return m, err
	}
	action := ActionMoveDone
	if step == MoveRolledBack {
		action = ActionMoveRollback
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := setStep(ctx, tx, &m, step); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE bulkhead.tenant_moves SET finished_at = now() WHERE id = $1`, m.ID); err != nil {
			return err
		}
		_, err := appendAudit(ctx, tx, Event{Action: action, Tenants: []string{m.Slug}, Detail: moveDetail(m)})
		return err
	})
	if err != nil {
		return m, fmt.Errorf("finish move of %s: %w", m.Slug, err)
	}
	now := time.Now()
	m.FinishedAt = &now
	return m, nil
}
