package isolation_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// A one-statement read's binding folds into one SELECT whose text is the
// same for every tenant, its values the arguments, and each setting
// transaction-local; a step with no call, or a step list unfolded for
// Citus, does not fold at all.
func TestStepsFoldIntoOneStatementForEveryTenant(t *testing.T) {
	ctx := isolation.WithBounds(context.Background(), isolation.Bounds{Statement: 5 * time.Second, Lock: time.Second})
	steps := func(id uuid.UUID) []isolation.Step {
		fence, err := isolation.FenceStep(isolation.Tenant{ID: id, Strategy: isolation.Schema, Placement: "t_x"})
		if err != nil {
			t.Fatal(err)
		}
		out, err := isolation.BindStatements(isolation.WithSteps(ctx, fence), id, isolation.SetRole("t_x"), isolation.SearchPath("t_x"))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := uuid.New(), uuid.New()
	sqlA, argsA, okA := isolation.Fold(steps(a))
	sqlB, argsB, okB := isolation.Fold(steps(b))
	if !okA || !okB {
		t.Fatalf("the binding did not fold: %q", isolation.Statements(steps(a)))
	}
	const want = "SELECT pg_catalog.set_config($1, $2, true), pg_catalog.set_config($3, $4, true), " +
		"pg_catalog.set_config($5, $6, true), pg_catalog.set_config($7, $8, true), pg_catalog.set_config($9, $10, true), " +
		"bulkhead_fence.enter_schema($11, $12, $13)"
	if sqlA != want || sqlB != want {
		t.Fatalf("folded to\n%s\nand\n%s\nwant\n%s", sqlA, sqlB, want)
	}
	text := func(args [][]byte) []string {
		var out []string
		for _, a := range args {
			out = append(out, string(a))
		}
		return out
	}
	got := text(argsA)
	wantArgs := []string{isolation.Setting, a.String(), "role", "t_x", "search_path", `"t_x", pg_temp`,
		"statement_timeout", "5000", "lock_timeout", "1000", "t_x"}
	if !slices.Equal(got[:len(wantArgs)], wantArgs) || len(got) != 13 {
		t.Fatalf("arguments %q, want %q and the two fence keys", got, wantArgs)
	}
	if slices.Equal(got, text(argsB)) {
		t.Fatal("two tenants' arguments are the same")
	}
	// Each step's own statement says the same as its call.
	for i, want := range []string{
		"SET LOCAL " + isolation.Setting + " = '" + a.String() + "'",
		`SET LOCAL ROLE "t_x"`,
		`SET LOCAL search_path = "t_x", pg_temp`,
		"SET LOCAL statement_timeout = 5000",
		"SET LOCAL lock_timeout = 1000",
	} {
		if s := steps(a)[i].SQL; s != want {
			t.Errorf("step %d is %q, want %q", i, s, want)
		}
	}
	if fence := steps(a)[5].SQL; !strings.HasPrefix(fence, "SELECT bulkhead_fence.enter_schema('t_x', '") {
		t.Errorf("the fence's statement is %q", fence)
	}

	for name, s := range map[string][]isolation.Step{
		"unfolded for Citus":          isolation.Unfolded(steps(a)),
		"with a statement of its own": append(steps(a), isolation.Statement("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")),
		"none":                        nil,
		"a ? without its argument":    {{SQL: "SELECT f(1)", Call: "f(?)"}},
		"an argument without its ?":   {{SQL: "SELECT f(1)", Call: "f()", Args: []string{"1"}}},
	} {
		if sql, _, ok := isolation.Fold(s); ok {
			t.Errorf("%s: folded to %q", name, sql)
		}
	}
}
