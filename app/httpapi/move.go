package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
)

// Mover moves live tenants (app/move.Mover).
type Mover interface {
	// Begin checks and records a move (or finds the open one to the same
	// target) and returns it with the function that runs it to its end.
	Begin(ctx context.Context, slug string, to control.Placement) (control.Move, func(context.Context) (control.Move, error), error)
	// Abort rolls the tenant's open move back. Both return a
	// *control.MoveRunningError (409) when another process runs the move.
	Abort(ctx context.Context, slug string) (control.Move, error)
}

// moves runs the moves the admin API started, each on a goroutine of its
// own, until the server stops: stop cancels them (each stays open at its
// step, to be resumed) and waits for them to record that. One runner per
// move is the move's lease (Begin takes it; a second Begin is a 409),
// here and across processes alike.
type moves struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
}

func newMoves() *moves {
	ctx, cancel := context.WithCancel(context.Background())
	return &moves{ctx: ctx, cancel: cancel}
}

// start runs run on a goroutine of its own; once the server stops, at
// once and here (run, given a context that is done, gives its lease up
// and returns).
func (m *moves) start(run func(context.Context) (control.Move, error), onErr func(error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		if _, err := run(m.ctx); err != nil {
			onErr(err)
		}
		return
	}
	m.wg.Go(func() {
		if _, err := run(m.ctx); err != nil {
			onErr(err)
		}
	})
}

// stop cancels the running moves and waits for them, at most until ctx ends.
func (m *moves) stop(ctx context.Context) error {
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func moveJSON(m control.Move) TenantMove {
	place := func(p control.Placement) TenantMovePlacement {
		return TenantMovePlacement{Isolation: TenantMovePlacementIsolation(p.Isolation), Server: nonEmpty(p.Server), Placement: nonEmpty(p.Placement)}
	}
	return TenantMove{
		Id: m.ID, Tenant: m.Slug, From: place(m.From), To: place(m.To), Step: TenantMoveStep(m.Step),
		RowsCopied: m.RowsCopied, PauseMs: m.PauseMS, StartedAt: m.StartedAt, UpdatedAt: m.UpdatedAt,
		FinishedAt: m.FinishedAt, Error: nonEmpty(m.Error),
	}
}

// AdminGetTenantMove returns the tenant's latest move.
func (h *handlers) AdminGetTenantMove(c echo.Context, slug Slug) error {
	m, err := h.control.LastMove(c.Request().Context(), slug)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, moveJSON(m))
}

// AdminMoveTenant starts or resumes a tenant's move (202, running on), or
// rolls it back (200).
func (h *handlers) AdminMoveTenant(c echo.Context, slug Slug) error {
	if h.mover == nil {
		return errors.New("no mover configured")
	}
	var body TenantMoveRequest
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	ctx := control.WithActor(c.Request().Context(), "admin-api")
	if body.Abort != nil && *body.Abort {
		if body.To != nil {
			return &store.ValidationError{Field: "to", Msg: "not with abort"}
		}
		m, err := h.mover.Abort(ctx, slug)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, moveJSON(m))
	}
	if body.To == nil {
		return &store.ValidationError{Field: "to", Msg: "required: rls, schema or database (or abort)"}
	}
	to := control.Placement{Isolation: *body.To}
	if body.Server != nil {
		to.Server = *body.Server
	}
	m, run, err := h.mover.Begin(ctx, slug, to)
	if err != nil {
		return err
	}
	h.moves.start(func(context.Context) (control.Move, error) {
		return run(control.WithActor(h.moves.ctx, "admin-api"))
	}, func(err error) {
		h.log.Error("tenant move stopped", "tenant", slug, "move_id", m.ID, "err", err)
	})
	c.Response().Header().Set(echo.HeaderLocation, "/admin/v1/tenants/"+slug+"/move")
	return c.JSON(http.StatusAccepted, moveJSON(m))
}
