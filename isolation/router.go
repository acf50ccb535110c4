package isolation

import (
	"context"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Router is the Strategy the rest of Bulkhead holds: it runs each tenant on
// the strategy the control plane recorded for it, and provisions new tenants
// with the configured one. Deployments can so hold tenants of several
// strategies side by side. It is safe for concurrent use.
type Router struct {
	def    Strategy
	byName map[string]Strategy
}

var _ Strategy = (*Router)(nil)

// NewRouter returns a Router provisioning with def and running tenants of
// any of the given strategies (def included).
func NewRouter(def Strategy, others ...Strategy) *Router {
	r := &Router{def: def, byName: map[string]Strategy{def.Name(): def}}
	for _, s := range others {
		r.byName[s.Name()] = s
	}
	return r
}

// Strategy returns the strategy called name, or an *UnknownStrategyError.
func (r *Router) Strategy(name string) (Strategy, error) {
	s, ok := r.byName[name]
	if !ok {
		return nil, &UnknownStrategyError{Name: name}
	}
	return s, nil
}

// Names lists the strategies r can run, sorted.
func (r *Router) Names() []string { return slices.Sorted(maps.Keys(r.byName)) }

// Default is the strategy new tenants are provisioned with.
func (r *Router) Default() Strategy { return r.def }

func (r *Router) of(t Tenant) (Strategy, error) {
	if t.Strategy == "" {
		return r.def, nil
	}
	return r.Strategy(t.Strategy)
}

// Name is the default strategy's name.
func (r *Router) Name() string { return r.def.Name() }

// Setup sets up the default strategy.
func (r *Router) Setup(ctx context.Context) error { return r.def.Setup(ctx) }

// Provision provisions t with t.Strategy, or the default when that is empty.
func (r *Router) Provision(ctx context.Context, t Tenant) (Tenant, error) {
	s, err := r.of(t)
	if err != nil {
		return t, err
	}
	return s.Provision(ctx, t)
}

// Deprovision deprovisions t on its strategy.
func (r *Router) Deprovision(ctx context.Context, t Tenant) error {
	s, err := r.of(t)
	if err != nil {
		return err
	}
	return s.Deprovision(ctx, t)
}

// Migrate migrates t on its strategy.
func (r *Router) Migrate(ctx context.Context, t Tenant) (int64, error) {
	s, err := r.of(t)
	if err != nil {
		return 0, err
	}
	return s.Migrate(ctx, t)
}

// Run runs fn bound to t, on t's strategy.
func (r *Router) Run(ctx context.Context, t Tenant, fn func(pgx.Tx) error) error {
	s, err := r.of(t)
	if err != nil {
		return err
	}
	return s.Run(ctx, t, fn)
}

// Verify verifies every strategy r can run.
func (r *Router) Verify(ctx context.Context) ([]Finding, error) {
	var all []Finding
	for _, name := range r.Names() {
		f, err := r.byName[name].Verify(ctx)
		if err != nil {
			return all, err
		}
		all = append(all, f...)
	}
	return all, nil
}

// Ready reports the default strategy's readiness.
func (r *Router) Ready(ctx context.Context) (Degraded, error) { return r.def.Ready(ctx) }

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
func (r *Router) BudgetOf(t Tenant) (size int, ok bool) {
	s, err := r.of(t)
	if err != nil {
		return 0, false
	}
	b, ok := s.(ConnectionBudgeter)
	if !ok {
		return 0, false
	}
	return b.ConnectionBudget(), true
}
