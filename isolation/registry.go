package isolation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Registry holds the strategies a process runs, each under its name, and
// the one new tenants are provisioned with. Tenants keep the strategy they
// were provisioned with, so a deployment can hold tenants of several side
// by side. It is not itself a Strategy: For picks the strategy of a
// tenant, Default the one of new tenants, All every one; the lifecycle
// methods (Setup, Ready) act on the strategies named to them, Verify and
// Close on all.
//
// Run is the one run policy every tenant transaction goes through: see
// Run. A Registry is safe for concurrent use.
type Registry struct {
	def    Strategy
	all    []Strategy // sorted by name
	byName map[string]Strategy
}

// Runner runs work bound to a tenant: the Registry, or a decoration of it
// (the admission gate, a test's fault injection). Decorations pass opts on.
type Runner interface {
	Run(ctx context.Context, t Tenant, fn func(pgx.Tx) error, opts ...RunOption) error
}

var _ Runner = (*Registry)(nil)

// NewRegistry returns a Registry of strategies whose default is the one
// called def: an *UnknownStrategyError when none is, an error when two
// share a name.
func NewRegistry(def string, strategies ...Strategy) (*Registry, error) {
	r := &Registry{byName: map[string]Strategy{}}
	for _, s := range strategies {
		if r.byName[s.Name()] != nil {
			return nil, fmt.Errorf("isolation strategy %q is registered twice", s.Name())
		}
		r.byName[s.Name()] = s
	}
	r.def = r.byName[def]
	if r.def == nil {
		return nil, &UnknownStrategyError{Name: def}
	}
	for _, name := range slices.Sorted(maps.Keys(r.byName)) {
		r.all = append(r.all, r.byName[name])
	}
	return r, nil
}

// RegistryOf returns a Registry of def, its default, and others, built
// already: for tests and tools that hold strategies rather than their
// descriptors. It panics when two share a name.
func RegistryOf(def Strategy, others ...Strategy) *Registry {
	r, err := NewRegistry(def.Name(), append([]Strategy{def}, others...)...)
	if err != nil {
		panic(err)
	}
	return r
}

// Default is the strategy new tenants are provisioned with.
func (r *Registry) Default() Strategy { return r.def }

// All lists every strategy of r, sorted by name.
func (r *Registry) All() []Strategy { return slices.Clone(r.all) }

// Names lists the names of the strategies of r, sorted.
func (r *Registry) Names() []string {
	out := make([]string, len(r.all))
	for i, s := range r.all {
		out[i] = s.Name()
	}
	return out
}

// Named returns the strategy called name, or an *UnknownStrategyError.
func (r *Registry) Named(name string) (Strategy, error) {
	s, ok := r.byName[name]
	if !ok {
		return nil, &UnknownStrategyError{Name: name}
	}
	return s, nil
}

// For returns the strategy t runs on: t.Strategy, or the default when t
// names none (a tenant being provisioned); an *UnknownStrategyError when
// this build has no strategy of that name.
func (r *Registry) For(t Tenant) (Strategy, error) {
	if t.Strategy == "" {
		return r.def, nil
	}
	return r.Named(t.Strategy)
}

// RunOption adjusts one Registry.Run.
type RunOption func(*runOptions)

type runOptions struct{ retryable bool }

// Retryable declares that fn may run twice: it assigns its results rather
// than accumulating them, and reads nothing it cannot read again (an open
// file, a request body). Run then retries it once on ErrStalePlan.
func Retryable() RunOption { return func(o *runOptions) { o.retryable = true } }

// ErrStalePlan is returned, wrapped, by a strategy's Run whose transaction
// failed on a statement prepared for another shape of the tenant tables
// (StalePlan): tenants at different migration versions on one connection,
// or a migration under a pooled connection. The strategy has done what the
// next attempt needs (pgx forgot the statement; the database strategy
// reset the tenant's pool) and nothing of fn was committed.
var ErrStalePlan = errors.New("prepared statement outdated by a schema change")

// MarkStale returns err wrapped in ErrStalePlan when StalePlan(err), and
// err as it is otherwise. Strategies' Run end with it.
func MarkStale(err error) error {
	if StalePlan(err) && !errors.Is(err, ErrStalePlan) {
		return fmt.Errorf("%w: %w", ErrStalePlan, err)
	}
	return err
}

// Run runs fn in one transaction bound to t, on t's strategy (For), and
// commits it when fn returns nil. It is the one policy for every strategy:
//
//   - A panic in fn is caught inside the strategy's Run, so the strategy
//     ends the transaction and releases what it holds (connection, budget
//     slot) on its ordinary path; Run then panics again with the same
//     value.
//   - A transaction that failed with ErrStalePlan is run once more when
//     opts hold Retryable, and never otherwise. A stale plan that is not
//     retried, or fails again, is returned wrapped in ErrUnavailable too:
//     the client may retry.
//
// Strategies do not retry fn themselves.
func (r *Registry) Run(ctx context.Context, t Tenant, fn func(pgx.Tx) error, opts ...RunOption) error {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	s, err := r.For(t)
	if err != nil {
		return err
	}
	err = runCaught(ctx, s, t, fn)
	if errors.Is(err, ErrStalePlan) && o.retryable && ctx.Err() == nil {
		err = runCaught(ctx, s, t, fn)
	}
	if errors.Is(err, ErrStalePlan) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: tenant %s: %w", ErrUnavailable, t, err)
	}
	return err
}

// errPanicked ends the transaction of an fn that panicked; Run panics
// again once the strategy has returned.
var errPanicked = errors.New("tenant work panicked")

// runCaught runs fn on s, turning a panic in fn into an error for the
// strategy's Run and back into the panic once that Run has returned.
func runCaught(ctx context.Context, s Strategy, t Tenant, fn func(pgx.Tx) error) error {
	var (
		panicked bool
		value    any
	)
	err := s.Run(ctx, t, func(tx pgx.Tx) (err error) {
		defer func() {
			if v := recover(); v != nil {
				panicked, value, err = true, v, errPanicked
			}
		}()
		return fn(tx)
	})
	if panicked {
		panic(value)
	}
	return err
}

// Setup sets up each strategy named in names (Strategy.Setup), in the
// order given; an unknown name is an *UnknownStrategyError.
func (r *Registry) Setup(ctx context.Context, names []string) error {
	for _, name := range names {
		s, err := r.Named(name)
		if err != nil {
			return err
		}
		if err := s.Setup(ctx); err != nil {
			return fmt.Errorf("set up %s strategy: %w", name, err)
		}
	}
	return nil
}

// Ready reports whether every strategy named in names can serve
// (Strategy.Ready): the first error, or the union of their Degraded parts.
// An unknown name is an *UnknownStrategyError.
func (r *Registry) Ready(ctx context.Context, names []string) (Degraded, error) {
	var all Degraded
	for _, name := range names {
		s, err := r.Named(name)
		if err != nil {
			return nil, err
		}
		d, err := s.Ready(ctx)
		if err != nil {
			return nil, err
		}
		for part, why := range d {
			if all == nil {
				all = Degraded{}
			}
			all[part] = why
		}
	}
	return all, nil
}

// Verify verifies every strategy of r (Strategy.Verify), in name order.
func (r *Registry) Verify(ctx context.Context) ([]Finding, error) {
	var all []Finding
	for _, s := range r.all {
		f, err := s.Verify(ctx)
		if err != nil {
			return all, fmt.Errorf("verify %s strategy: %w", s.Name(), err)
		}
		all = append(all, f...)
	}
	return all, nil
}

// Close closes every strategy that holds resources of its own: an
// io.Closer, or one with a Close method that returns nothing. It returns
// their errors joined.
func (r *Registry) Close() error {
	var errs []error
	for _, s := range r.all {
		switch c := s.(type) {
		case io.Closer:
			errs = append(errs, c.Close())
		case interface{ Close() }:
			c.Close()
		}
	}
	return errors.Join(errs...)
}

// ConnectionBudgeter is what a strategy implements when its tenants are
// served on connections of its own, under one budget (the database
// strategy's tenant pools), rather than on the serving pool.
type ConnectionBudgeter interface {
	// ConnectionBudget is how many connections its tenants hold at once.
	ConnectionBudget() int
}

// BudgetOf reports the connection budget t's work runs under when t's
// strategy has one (ConnectionBudgeter); ok is false when t is served on
// the serving pool, or its strategy is unknown.
func (r *Registry) BudgetOf(t Tenant) (size int, ok bool) {
	s, err := r.For(t)
	if err != nil {
		return 0, false
	}
	b, ok := s.(ConnectionBudgeter)
	if !ok {
		return 0, false
	}
	return b.ConnectionBudget(), true
}
