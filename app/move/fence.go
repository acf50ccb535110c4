package move

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Fence is the Runner all tenant work goes through: it runs every tenant
// transaction, through the Registry's run policy, behind its tenant's move
// fence (isolation.FenceStep, in the transaction's BEGIN), so that a
// move's cut-over pauses it, and a transaction routed to a placement the
// tenant has left runs again on the placement the control plane now
// records, before anything ran. Tenants of a strategy the fence does not
// know (isolation.Fenceable) run unfenced: the Mover refuses to move them.
// It is safe for concurrent use.
type Fence struct {
	strategies *isolation.Registry
	control    *pgxpool.Pool
}

var _ isolation.Runner = (*Fence)(nil)

// NewFence returns the strategies of the registry behind the fence,
// reading placements from the control plane with pool.
func NewFence(strategies *isolation.Registry, pool *pgxpool.Pool) *Fence {
	return &Fence{strategies: strategies, control: pool}
}

// retries bounds how often one Run follows its tenant to a new placement.
const retries = 5

// Run runs fn bound to t behind t's fence. A transaction refused by the
// fence (t has moved) is run again on t's recorded placement, at most
// retries times; after that, or when the record cannot be read, the
// error wraps isolation.ErrUnavailable (the client may retry).
func (f *Fence) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	if t.Strategy == "" {
		t.Strategy = f.strategies.Default().Name()
	}
	for attempt := 0; ; attempt++ {
		if !isolation.Fenceable(t.Strategy) {
			return f.strategies.Run(ctx, t, fn, opts...)
		}
		stmt, err := isolation.FenceStep(t)
		if err != nil {
			return err
		}
		err = f.strategies.Run(isolation.WithSteps(ctx, stmt), t, fn, opts...)
		if err == nil || !gone(err) || ctx.Err() != nil {
			return err
		}
		if attempt == retries || f.control == nil {
			return fmt.Errorf("%w: %w", isolation.ErrUnavailable, err)
		}
		now, perr := f.placement(ctx, t.ID)
		if perr != nil {
			return fmt.Errorf("%w: %w", isolation.ErrUnavailable, perr)
		}
		if now == t {
			if !isolation.IsMoved(err) {
				return err // unavailable where it still lives
			}
			// The source is closed and the switch not yet recorded (a
			// database source commits its close first): wait for it,
			// boundedly, as a write waits for the cut-over.
			select {
			case <-time.After(time.Duration(attempt+1) * switchWait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		t = now
	}
}

// switchWait is the first wait for a switch the fence says is under way.
const switchWait = 100 * time.Millisecond

// gone reports whether err may be the sign of a placement the tenant has
// left: the fence's refusal, or its storage removed under a request that
// was routed to it before the switch (its schema, role or database
// dropped, its session ended) — which, since servers cache a key's
// tenant for up to a second, is any request of that second. Run retries
// only if the control plane then records another placement. None of
// these leaves a commit behind: past the
// cut-over nothing passes the source's fence, so a transaction that
// failed there wrote nothing and can run on the new placement.
func gone(err error) bool {
	if isolation.IsMoved(err) || errors.Is(err, isolation.ErrUnavailable) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3D000", // invalid_catalog_name: the database was dropped
			"3F000", // invalid_schema_name
			"42P01", // undefined_table: the schema went with its tables
			"22023", // invalid_parameter_value: SET ROLE to the schema's dropped role
			"42704", // undefined_object: the same, where it is reported so
			// insufficient_privilege: the same, caught half-dropped: the
			// role still in the catalog cache, the serving role's
			// membership in it already gone (a plain permission error
			// finds the tenant where it was and is returned as it is).
			"42501",
			"57P01": // admin_shutdown: the session was ended by the drop
			return true
		}
	}
	return false
}

// placement reads where the tenant with id is served now.
func (f *Fence) placement(ctx context.Context, id uuid.UUID) (isolation.Tenant, error) {
	t := isolation.Tenant{ID: id}
	err := f.control.QueryRow(ctx, `SELECT slug, isolation, server, placement FROM bulkhead.tenants WHERE id = $1`, id).
		Scan(&t.Slug, &t.Strategy, &t.Server, &t.Placement)
	if err != nil {
		return t, fmt.Errorf("read the placement of tenant %s: %w", id, err)
	}
	return t, nil
}
