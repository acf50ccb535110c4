package finops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Providers are the cloud providers an account can belong to.
var Providers = []string{"aws", "azure", "gcp"}

// Account is a cloud account of a tenant.
type Account struct {
	ID         uuid.UUID
	Provider   string
	ExternalID string
	Name       string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// AccountInput is a new account, or the changes to one (nil: unchanged).
type AccountInput struct {
	Provider   *string
	ExternalID *string
	Name       *string
}

func (in AccountInput) validate(create bool) error {
	var errs []error
	field := func(name string, v *string, check func(string) string) {
		switch {
		case v == nil && create:
			errs = append(errs, &store.ValidationError{Field: name, Msg: "required"})
		case v != nil:
			if msg := check(*v); msg != "" {
				errs = append(errs, &store.ValidationError{Field: name, Msg: msg})
			}
		}
	}
	field("provider", in.Provider, func(s string) string {
		for _, p := range Providers {
			if s == p {
				return ""
			}
		}
		return `must be one of "aws", "azure", "gcp"`
	})
	field("external_id", in.ExternalID, store.CheckText)
	field("name", in.Name, store.CheckText)
	return errors.Join(errs...)
}

const accountColumns = `id, provider, external_id, name, created_at, updated_at`

func scanAccount(row pgx.Row) (Account, error) {
	var a Account
	err := row.Scan(&a.ID, &a.Provider, &a.ExternalID, &a.Name, &a.CreatedAt, &a.UpdatedAt)
	return a, err
}

// CreateAccount creates an account of t. A provider and external id already
// used by another account of t is a *store.ConflictError.
func (s *Service) CreateAccount(ctx context.Context, t isolation.Tenant, in AccountInput) (Account, error) {
	if err := in.validate(true); err != nil {
		return Account{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Account{}, err
	}
	var a Account
	err = s.run(ctx, t, func(tx pgx.Tx) error {
		a, err = scanAccount(tx.QueryRow(ctx, `
			INSERT INTO accounts (tenant_id, id, provider, external_id, name)
			VALUES ($1, $2, $3, $4, $5)
			RETURNING `+accountColumns,
			t.ID, id, *in.Provider, strings.TrimSpace(*in.ExternalID), strings.TrimSpace(*in.Name)))
		return accountConstraints.Name(err)
	})
	if err != nil {
		return Account{}, fmt.Errorf("create account: %w", err)
	}
	return a, nil
}

// accountConstraints is what an insert or update of one account can break
// (its id is new, or not changed).
var accountConstraints = store.Constraints{store.UniqueViolation: "accounts_external_id_key"}

// AccountStatement is the statement Account sends, with the tenant's id as
// $1 and the account's as $2: for measuring the same statement without the
// server (the bench's pgbench anchor).
const AccountStatement = `SELECT ` + accountColumns + ` FROM accounts WHERE tenant_id = $1 AND id = $2`

// Account returns the account id of t, or store.ErrNotFound.
func (s *Service) Account(ctx context.Context, t isolation.Tenant, id uuid.UUID) (Account, error) {
	var a Account
	err := s.read1(ctx, t, func(tx pgx.Tx) (err error) {
		a, err = scanAccount(tx.QueryRow(ctx, AccountStatement, t.ID, id))
		return err
	})
	return a, err
}

// Accounts returns a page of t's accounts in creation order, and the cursor
// of the next page ("" on the last).
func (s *Service) Accounts(ctx context.Context, t isolation.Tenant, p Page) ([]Account, string, error) {
	return idPage(ctx, s, t, p, `SELECT `+accountColumns+` FROM accounts
		WHERE tenant_id = $1 AND id > $2
		ORDER BY id LIMIT $3`, scanAccount, func(a Account) uuid.UUID { return a.ID })
}

// Precondition limits a write to the row versions it names (the UpdatedAt
// of each): an If-Match. A nil *Precondition allows any version; one with
// no versions allows none.
type Precondition struct {
	Versions []time.Time
}

// versions is the SQL parameter of p: NULL (any version) for nil.
func (p *Precondition) versions() []time.Time {
	if p == nil {
		return nil
	}
	if p.Versions == nil {
		return []time.Time{}
	}
	return p.Versions
}

// UpdateAccount changes the fields of in that are set, on the account id of
// t; store.ErrNotFound when t has no such account, store.ErrPreconditionFailed
// when if is set and the account is at none of its versions (compared in the
// write itself, so a concurrent change cannot slip between). Every update
// moves UpdatedAt forward, even two in one microsecond.
func (s *Service) UpdateAccount(ctx context.Context, t isolation.Tenant, id uuid.UUID, in AccountInput, cond *Precondition) (Account, error) {
	if err := in.validate(false); err != nil {
		return Account{}, err
	}
	trim := func(p *string) *string {
		if p == nil {
			return nil
		}
		v := strings.TrimSpace(*p)
		return &v
	}
	var a Account
	err := s.run(ctx, t, func(tx pgx.Tx) (err error) {
		a, err = scanAccount(tx.QueryRow(ctx, `
			UPDATE accounts SET
				provider = COALESCE($3, provider),
				external_id = COALESCE($4, external_id),
				name = COALESCE($5, name),
				updated_at = greatest($7::timestamptz, timezone('UTC', timezone('UTC', updated_at) + interval '1 microsecond'))
			WHERE tenant_id = $1 AND id = $2 AND ($6::timestamptz[] IS NULL OR updated_at = ANY($6))
			RETURNING `+accountColumns, t.ID, id, in.Provider, trim(in.ExternalID), trim(in.Name), cond.versions(),
			// The time is a parameter, and the step is taken in UTC with
			// immutable functions: Citus refuses a volatile or stable one
			// (clock_timestamp, now, timestamptz + interval) beside a column
			// in a distributed UPDATE.
			time.Now()))
		err = accountConstraints.Name(err)
		if errors.Is(err, pgx.ErrNoRows) && cond != nil {
			return missingOrChanged(ctx, tx, t, id)
		}
		return err
	})
	return a, err
}

// missingOrChanged tells why a conditional write of account id touched no
// row: store.ErrNotFound, or store.ErrPreconditionFailed when it exists.
func missingOrChanged(ctx context.Context, tx pgx.Tx, t isolation.Tenant, id uuid.UUID) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE tenant_id = $1 AND id = $2)`,
		t.ID, id).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return store.ErrPreconditionFailed
	}
	return store.ErrNotFound
}

// DeleteAccount deletes the account id of t; store.ErrNotFound when t has no
// such account, a *store.ConflictError while cost items or budgets refer to
// it, store.ErrPreconditionFailed when cond is set and the account is at
// none of its versions.
func (s *Service) DeleteAccount(ctx context.Context, t isolation.Tenant, id uuid.UUID, cond *Precondition) error {
	return s.run(ctx, t, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM accounts WHERE tenant_id = $1 AND id = $2
			AND ($3::timestamptz[] IS NULL OR updated_at = ANY($3))`, t.ID, id, cond.versions())
		if err != nil {
			return accountInUse(err)
		}
		if tag.RowsAffected() == 0 {
			if cond != nil {
				return missingOrChanged(ctx, tx, t, id)
			}
			return store.ErrNotFound
		}
		// Deferrable references are checked at commit; check them here so
		// the error is the statement's and the conflict is reported.
		_, err = tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`)
		return accountInUse(err)
	})
}

// accountInUse is store.InUse for the delete of an account, which two
// references can refuse: one the server did not name (Citus relays a
// worker's error without it, see store.Constraints) is answered as
// either.
func accountInUse(err error) error {
	err = store.InUse(err)
	var c *store.ConflictError
	if errors.As(err, &c) && c.Constraint == "" {
		c.Msg = "the account has cost items or budgets, which keep it from being deleted"
	}
	return err
}
