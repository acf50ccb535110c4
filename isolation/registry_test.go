package isolation_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// fake is a strategy that runs fn with no transaction and records what
// the registry asked of it. The registry's policy is what is under test,
// not a database.
type fake struct {
	isolation.Strategy
	name     string
	stale    int // Runs that fail with a stale plan before one succeeds
	runs     int
	released int // Runs that returned, however fn ended
	setup    int
	ready    error
	degraded isolation.Degraded
	closed   bool
}

func (f *fake) Name() string { return f.name }

func (f *fake) Run(_ context.Context, _ isolation.Tenant, fn func(pgx.Tx) error) error {
	f.runs++
	defer func() { f.released++ }()
	err := fn(nil)
	if err == nil && f.stale > 0 {
		f.stale--
		return isolation.MarkStale(&pgconn.PgError{Code: "0A000"})
	}
	return err
}

func (f *fake) Setup(context.Context) error { f.setup++; return nil }

func (f *fake) Ready(context.Context) (isolation.Degraded, error) { return f.degraded, f.ready }

func (f *fake) Verify(context.Context) ([]isolation.Finding, error) {
	return []isolation.Finding{{Code: f.name}}, nil
}

func (f *fake) Close() { f.closed = true }

type budgeted struct{ *fake }

func (budgeted) ConnectionBudget() int { return 7 }

func tenantOf(strategy string) isolation.Tenant { return isolation.Tenant{Strategy: strategy} }

// A stale plan is run again once for work that declares itself
// retryable, never for other work, and never twice; what is not cured is
// ErrUnavailable (the client may retry) and still says it was stale.
func TestRegistryRetriesOnlyRetryableWorkOnce(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		stale     int
		retryable bool
		runs      int
		ok        bool
	}{
		{"retryable, cured", 1, true, 2, true},
		{"retryable, stale twice", 2, true, 2, false},
		{"not retryable", 1, false, 1, false},
		{"not stale", 0, true, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := &fake{name: "a", stale: c.stale}
			r := isolation.RegistryOf(f)
			var opts []isolation.RunOption
			if c.retryable {
				opts = append(opts, isolation.Retryable())
			}
			calls := 0
			err := r.Run(context.Background(), tenantOf("a"), func(pgx.Tx) error { calls++; return nil }, opts...)
			if calls != c.runs || f.runs != c.runs {
				t.Errorf("fn ran %d times, the strategy %d; want %d", calls, f.runs, c.runs)
			}
			switch {
			case c.ok && err != nil:
				t.Errorf("got %v, want success", err)
			case !c.ok && (!errors.Is(err, isolation.ErrUnavailable) || !errors.Is(err, isolation.ErrStalePlan)):
				t.Errorf("got %v, want ErrUnavailable wrapping ErrStalePlan", err)
			}
		})
	}
}

// An error that is not a stale plan is returned as it is, and the work is
// not run again.
func TestRegistryReturnsOtherErrorsOnce(t *testing.T) {
	t.Parallel()
	f := &fake{name: "a"}
	boom := errors.New("boom")
	calls := 0
	err := isolation.RegistryOf(f).Run(context.Background(), tenantOf("a"), func(pgx.Tx) error { calls++; return boom }, isolation.Retryable())
	if !errors.Is(err, boom) || errors.Is(err, isolation.ErrUnavailable) || calls != 1 {
		t.Errorf("got %v after %d calls, want boom after 1", err, calls)
	}
}

// A panic in fn reaches the strategy as an error, so it ends its
// transaction on its ordinary path; then it goes on, with its value.
func TestRegistryPanicReleasesThenPropagates(t *testing.T) {
	t.Parallel()
	f := &fake{name: "a"}
	r := isolation.RegistryOf(f)
	defer func() {
		if v := recover(); v != "injected" {
			t.Fatalf("recovered %v, want the fn's own panic value", v)
		}
		if f.runs != 1 || f.released != 1 {
			t.Errorf("strategy ran %d and returned %d times, want 1 and 1", f.runs, f.released)
		}
	}()
	_ = r.Run(context.Background(), tenantOf("a"), func(pgx.Tx) error { panic("injected") }, isolation.Retryable())
	t.Fatal("Run returned after a panic in fn")
}

// For picks a tenant's own strategy (the default for one being
// provisioned), All and Names list every strategy, and an unknown name is
// an *UnknownStrategyError everywhere it can be named.
func TestRegistryPicksAndLists(t *testing.T) {
	t.Parallel()
	a, b := &fake{name: "a"}, &fake{name: "b"}
	r, err := isolation.NewRegistry("b", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Default() != b {
		t.Errorf("default %v, want b", r.Default().Name())
	}
	for strategy, want := range map[string]isolation.Strategy{"a": a, "b": b, "": b} {
		if s, err := r.For(tenantOf(strategy)); err != nil || s != want {
			t.Errorf("For(tenant of %q) = %v, %v", strategy, s, err)
		}
	}
	if got := r.Names(); !slices.Equal(got, []string{"a", "b"}) || len(r.All()) != 2 {
		t.Errorf("names %v, all %d", got, len(r.All()))
	}
	var unknown *isolation.UnknownStrategyError
	if _, err := r.For(tenantOf("nosuch")); !errors.As(err, &unknown) {
		t.Errorf("For(unknown): %v", err)
	}
	if err := r.Run(context.Background(), tenantOf("nosuch"), func(pgx.Tx) error { return nil }); !errors.As(err, &unknown) {
		t.Errorf("Run(unknown): %v", err)
	}
	if err := r.Setup(context.Background(), []string{"a", "nosuch"}); !errors.As(err, &unknown) || a.setup != 1 {
		t.Errorf("Setup(a, nosuch): %v, a set up %d times", err, a.setup)
	}
	if _, err := isolation.NewRegistry("nosuch", a, b); !errors.As(err, &unknown) {
		t.Errorf("NewRegistry with an unknown default: %v", err)
	}
	if _, err := isolation.NewRegistry("a", a, &fake{name: "a"}); err == nil {
		t.Error("NewRegistry with two strategies of one name: no error")
	}
}

// Readiness covers every strategy named, not only the default: one that
// cannot serve makes the whole not ready, and degraded parts add up.
func TestRegistryReadyCoversEveryStrategyInUse(t *testing.T) {
	t.Parallel()
	notReady := &isolation.NotReadyError{Reason: "b is behind"}
	a := &fake{name: "a", degraded: isolation.Degraded{"server x": "down"}}
	b := &fake{name: "b", ready: notReady}
	c := &fake{name: "c", degraded: isolation.Degraded{"server y": "down"}}
	r, err := isolation.NewRegistry("a", a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Ready(context.Background(), []string{"a", "b"}); !errors.Is(err, notReady) {
		t.Errorf("ready with b in use: %v, want b's error", err)
	}
	d, err := r.Ready(context.Background(), []string{"a", "c"})
	if err != nil || len(d) != 2 {
		t.Errorf("ready with a and c in use: %v, %v; want both degraded parts", d, err)
	}
	findings, err := r.Verify(context.Background())
	if err != nil || len(findings) != 3 {
		t.Errorf("verify: %v, %v; want one finding of each strategy", findings, err)
	}
	if err := r.Close(); err != nil || !a.closed || !b.closed || !c.closed {
		t.Errorf("close: %v; closed %v %v %v", err, a.closed, b.closed, c.closed)
	}
}

// A tenant's work runs under its strategy's connection budget when the
// strategy has one, whichever strategy is the default; tenants of the
// others, of the default (no strategy named) and of an unknown one are on
// the serving pool.
func TestRegistryBudgetOf(t *testing.T) {
	t.Parallel()
	r := isolation.RegistryOf(&fake{name: isolation.RLS}, budgeted{&fake{name: isolation.Database}})
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
