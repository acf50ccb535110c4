package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// german fails t unless err is a PostgreSQL error reported in German: the
// proof that the translation below ran on translated messages.
func german(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("%s: got %v, want a PostgreSQL error", what, err)
	}
	for _, english := range []string{"violates", "row-level security", "duplicate key", "is still referenced", "is not present"} {
		if strings.Contains(pgErr.Message+pgErr.Detail, english) {
			t.Fatalf("%s: the server answered in English (%q), so this test proves nothing", what, pgErr.Message)
		}
	}
}

// On a server whose messages are German, the store still tells a write
// outside the bound tenant (not found), a duplicate key (conflict, naming
// the constraint), a reference to a missing row, a delete of a row still
// referenced and a failed check apart: it reads SQLSTATEs, constraint
// names and the routine that raised the error, never the message.
func TestErrorsAreClassifiedWhateverTheServerLanguage(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.Translated(t)
	cfg := pgtest.Config(db)
	pools, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)
	ctx := context.Background()
	strategy := rls.New(pools.App, pools.Owner)
	a := isolation.Tenant{ID: uuid.New(), Slug: "tenant-a", Strategy: isolation.RLS}
	b := isolation.Tenant{ID: uuid.New(), Slug: "tenant-b", Strategy: isolation.RLS}
	account := uuid.New()
	insert := `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', $3, 'x')`
	if err := strategy.Run(ctx, a, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insert, a.ID, account, "one"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id)
			VALUES ($1, $2, 'b', 10, 'USD', 'monthly', $3)`, a.ID, uuid.New(), account)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// raw runs sql bound to a and returns the driver's error, checked to be
	// German, and the store's translation of it.
	raw := func(what, sql string, args ...any) error {
		t.Helper()
		err := strategy.Run(ctx, a, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sql, args...)
			return err
		})
		german(t, what, err)
		return store.Translate(err)
	}

	if err := raw("a row for another tenant", insert, b.ID, uuid.New(), "planted"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a row for another tenant: got %v, want store.ErrNotFound", err)
	}
	var conflict *store.ConflictError
	if err := raw("a duplicate key", insert, a.ID, uuid.New(), "one"); !errors.As(err, &conflict) || conflict.Constraint != "accounts_external_id_key" {
		t.Errorf("a duplicate key: got %v, want a conflict on accounts_external_id_key", err)
	}
	var ref *store.ReferenceError
	if err := raw("a missing account", `INSERT INTO budgets (tenant_id, id, name, amount, currency, period, account_id)
		VALUES ($1, $2, 'c', 10, 'USD', 'monthly', $3)`, a.ID, uuid.New(), uuid.New()); !errors.As(err, &ref) || ref.Constraint != "budgets_account_fkey" {
		t.Errorf("a missing account: got %v, want a reference error on budgets_account_fkey", err)
	}
	var invalid *store.InvalidError
	if err := raw("a negative budget", `UPDATE budgets SET amount = -1 WHERE tenant_id = $1`, a.ID); !errors.As(err, &invalid) {
		t.Errorf("a negative budget: got %v, want an invalid value", err)
	}
	// The store's own delete, end to end: the budget still refers to the
	// account.
	var deleteErr error
	_ = strategy.Run(ctx, a, func(tx pgx.Tx) error {
		_, deleteErr = tx.Exec(ctx, `DELETE FROM accounts WHERE tenant_id = $1 AND id = $2`, a.ID, account)
		return deleteErr
	})
	german(t, "a referenced account", deleteErr)
	if err := finops.New(isolation.RegistryOf(strategy)).DeleteAccount(ctx, a, account, nil); !errors.As(err, &conflict) || conflict.Constraint != "budgets_account_fkey" {
		t.Errorf("delete a referenced account: got %v, want a conflict on budgets_account_fkey", err)
	}
}

// A violation relayed without its constraint's name, as Citus relays a
// worker's, is named by the statement's Constraints for its SQLSTATE; a
// name the server sent is kept, and other errors pass as they are.
func TestConstraintsNameWhatTheServerDidNot(t *testing.T) {
	t.Parallel()
	c := store.Constraints{store.UniqueViolation: "budgets_name_key", store.ForeignKeyViolation: "budgets_account_fkey"}
	var conflict *store.ConflictError
	if err := store.Translate(c.Name(&pgconn.PgError{Code: store.UniqueViolation})); !errors.As(err, &conflict) || conflict.Constraint != "budgets_name_key" {
		t.Errorf("an unnamed duplicate key: got %#v, want a conflict on budgets_name_key", err)
	}
	var ref *store.ReferenceError
	if err := store.Translate(c.Name(&pgconn.PgError{Code: store.ForeignKeyViolation})); !errors.As(err, &ref) || ref.Constraint != "budgets_account_fkey" {
		t.Errorf("an unnamed reference: got %#v, want a reference error on budgets_account_fkey", err)
	}
	named := &pgconn.PgError{Code: store.UniqueViolation, ConstraintName: "budgets_pkey"}
	if err := store.Translate(c.Name(named)); !errors.As(err, &conflict) || conflict.Constraint != "budgets_pkey" {
		t.Errorf("a named duplicate key: got %#v, want the server's name kept", err)
	}
	check := &pgconn.PgError{Code: "23514"}
	if err := c.Name(check); err != check || check.ConstraintName != "" {
		t.Errorf("a check violation: got %#v, want it untouched", err)
	}
	if err := c.Name(nil); err != nil {
		t.Errorf("no error: got %v", err)
	}
}
