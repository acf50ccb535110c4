package strategytest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The kit fails a strategy that breaks the seam, with a message saying
// how: each broken strategy below runs Exercise in a child process, which
// must fail with the words expected — so the strategies that pass it are
// known to be able to fail it.
func TestExerciseCatchesBrokenSeams(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		test string
		want []string
	}{
		{"TestBrokenCommitsOnPanic", []string{"a panicking transaction committed", "LEAK: a session"}},
		{"TestBrokenBindsNothing", []string{"Run of the zero tenant: <nil>", "LEAK: SELECT without a tenant predicate", "LEAK: an INSERT"}},
		{"TestBrokenRetriesItself", []string{"stale plan once through the strategy: fn ran 2 times, want 1", "stale plan once through the registry: fn ran 2 times, want 1"}},
	} {
		t.Run(c.test, func(t *testing.T) {
			t.Parallel()
			out := expectFailure(t, c.test)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s failed without saying %q; output:\n%s", c.test, w, out)
				}
			}
		})
	}
}

// childEnv names the test a child process of expectFailure is to run.
const childEnv = "BULKHEAD_STRATEGYTEST_CHILD"

// isChild reports whether this process is expectFailure's child for t.
func isChild(t *testing.T) bool { return os.Getenv(childEnv) == t.Name() }

// expectFailure runs the top-level test called name in a child process
// of this test binary and returns its output, failing t unless the child
// ran it and it failed.
func expectFailure(t *testing.T, name string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(name)+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var exit *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exit) {
		t.Fatalf("%s in a child process: %v, want it to fail; output:\n%s", name, err, out.String())
	}
	if !strings.Contains(out.String(), "--- FAIL: "+name) {
		t.Fatalf("%s did not fail in the child process; output:\n%s", name, out.String())
	}
	return out.String()
}

// TestBrokenCommitsOnPanic is Exercise's panic subtest against a Run that
// commits what fn did before a panic propagates; it does nothing outside
// TestExerciseCatchesBrokenSeams's child process.
func TestBrokenCommitsOnPanic(t *testing.T) {
	if !isChild(t) {
		return
	}
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		e, app := rlsEnv(t, false)
		e.Strategy = &commitsOnPanic{Strategy: e.Strategy, pool: app}
		return e
	})
}

// TestBrokenBindsNothing is Exercise against a Run that binds no tenant,
// on tables without Row-Level Security; it does nothing outside
// TestExerciseCatchesBrokenSeams's child process.
func TestBrokenBindsNothing(t *testing.T) {
	if !isChild(t) {
		return
	}
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		e, app := rlsEnv(t, true)
		e.Strategy = &bindsNothing{Strategy: e.Strategy, pool: app}
		return e
	})
}

// TestBrokenRetriesItself is Exercise against a Run that runs fn again
// after a stale plan itself, whether fn may run twice or not (the retry
// is the Registry's, for fns declared isolation.Retryable); it does
// nothing outside TestExerciseCatchesBrokenSeams's child process.
func TestBrokenRetriesItself(t *testing.T) {
	if !isChild(t) {
		return
	}
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		e, _ := rlsEnv(t, false)
		e.Strategy = &retriesItself{Strategy: e.Strategy}
		return e
	})
}

// rlsEnv is the shared-tables strategy on a database of its own, with
// Row-Level Security taken off its tables when noRLS, and its serving
// pool.
func rlsEnv(t *testing.T, noRLS bool) (strategytest.Env, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	if noRLS {
		for _, table := range []string{"accounts", "cost_items", "budgets", "idempotency_keys", "cost_imports"} {
			db.Exec(t, `ALTER TABLE `+pgx.Identifier{table}.Sanitize()+` NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY`)
		}
	}
	var app *pgxpool.Pool
	e := pgtest.StrategyEnv(t, db, 2, func(_ *config.Config, pools *postgres.Pools, serving *pgxpool.Pool) (isolation.Strategy, error) {
		app = serving
		return rls.New(serving, pools.Owner), nil
	})
	return e, app
}

// commitsOnPanic binds as rls does, but commits when fn panics.
type commitsOnPanic struct {
	isolation.Strategy
	pool *pgxpool.Pool
}

func (s *commitsOnPanic) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	opts, err := isolation.BindRun(ctx, t.ID, isolation.SearchPath(isolation.SharedSchema))
	if err != nil {
		return err
	}
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Commit(ctx)
			panic(r)
		}
	}()
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	return tx.Commit(ctx)
}

// retriesItself is rls, but runs fn once more after a stale plan.
type retriesItself struct{ isolation.Strategy }

func (s *retriesItself) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	err := s.Strategy.Run(ctx, t, fn)
	if errors.Is(err, isolation.ErrStalePlan) {
		err = s.Strategy.Run(ctx, t, fn)
	}
	return err
}

// bindsNothing runs fn in a plain transaction.
type bindsNothing struct {
	isolation.Strategy
	pool *pgxpool.Pool
}

func (s *bindsNothing) Run(ctx context.Context, _ isolation.Tenant, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, fn)
}
