package isolation_test

import (
	"testing"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// named is a strategy that is only a name: Router.BudgetOf asks nothing
// else of it.
type named struct {
	isolation.Strategy
	name string
}

func (n named) Name() string { return n.name }

type budgeted struct{ named }

func (budgeted) ConnectionBudget() int { return 7 }

// A tenant's work runs under its strategy's connection budget when the
// strategy has one, whichever strategy is the default; tenants of the
// others, of the default (no strategy named) and of an unknown one are on
// the serving pool.
func TestRouterBudgetOf(t *testing.T) {
	t.Parallel()
	r := isolation.NewRouter(named{name: isolation.RLS}, budgeted{named{name: isolation.Database}})
	for _, c := range []struct {
		strategy string
		size     int
		ok       bool
	}{{isolation.Database, 7, true}, {isolation.RLS, 0, false}, {"", 0, false}, {"nosuch", 0, false}} {
		size, ok := r.BudgetOf(isolation.Tenant{Strategy: c.strategy})
		if size != c.size || ok != c.ok {
			t.Errorf("BudgetOf(tenant of %q) = %d, %v; want %d, %v", c.strategy, size, ok, c.size, c.ok)
		}
	}
}
