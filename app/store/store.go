// Package store holds what every Bulkhead store shares: the errors stores
// return and the one place where driver errors are translated into them.
// Nothing above a store imports pgconn.
package store

import (
	"context"
	"errors"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// ErrNotFound means the row does not exist for this tenant. Another tenant's
// row is not found, never forbidden.
var ErrNotFound = errors.New("not found")

// ErrPreconditionFailed means a conditional write found the row at another
// version than the ones it was allowed to change (an If-Match that no
// longer matches): nothing was written.
var ErrPreconditionFailed = errors.New("the resource has changed since it was read")

// ErrUnavailable means the database could not be reached or asked the
// client to retry; answering 503 is right.
var ErrUnavailable = isolation.ErrUnavailable

// ValidationError is bad input: the field it concerns (a name, or a path
// such as "[3].amount" into a list) and what is wrong with it.
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Msg }

// ConflictError is a unique-key violation, or a row still referenced.
// Constraint names the constraint, for code that tells them apart; Msg,
// when the store sets it, says what conflicts in the API's words. Neither
// Error nor an answer ever shows the constraint's name.
type ConflictError struct {
	Constraint string
	Msg        string
}

func (e *ConflictError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return "the request conflicts with existing data"
}

// ReferenceError is a reference to a row that does not exist for this
// tenant (a foreign-key violation). Constraint names the constraint, for
// code; Error does not show it.
type ReferenceError struct {
	Constraint string
}

func (e *ReferenceError) Error() string { return "a referenced row does not exist" }

// InvalidError is a value a table's CHECK constraint, type or encoding
// refused. Constraint names the constraint when there is one, for code;
// Error does not show it.
type InvalidError struct {
	Constraint string
}

func (e *InvalidError) Error() string { return "a value is out of range or invalid" }

// CheckText checks name-like text as every store does: 1-200 characters
// of valid UTF-8, not only spaces, without control characters (PostgreSQL
// cannot store NUL). It returns the client's error message, or "".
func CheckText(s string) string {
	switch n := utf8.RuneCountInString(s); {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case strings.TrimSpace(s) == "":
		return "required"
	case n > 200:
		return "must be at most 200 characters"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "must not contain control characters"
	}
	return ""
}

// TimeoutError is work PostgreSQL ended because it ran past one of the
// bounds of its transaction (isolation.Bounds). Setting names the bound:
// statement_timeout, lock_timeout or idle_in_transaction_session_timeout.
// The request may be retried; the work was rolled back.
type TimeoutError struct {
	Setting string
}

func (e *TimeoutError) Error() string { return "ended by " + e.Setting }

// Bound settings, as TimeoutError.Setting names them.
const (
	StatementTimeout         = "statement_timeout"
	LockTimeout              = "lock_timeout"
	IdleInTransactionTimeout = "idle_in_transaction_session_timeout"
)

// rlsCheckRoutine is the server function that raises a row-level security
// policy's WITH CHECK violation. The error carries no table, constraint or
// SQLSTATE of its own (a missing grant is 42501 too), and its message is
// translated with lc_messages; the routine that raised it is neither, and
// has been this one since PostgreSQL 9.5 brought row-level security.
const rlsCheckRoutine = "ExecWithCheckOptions"

// SQLSTATEs of the violations a statement's Constraints name.
const (
	UniqueViolation     = "23505"
	ForeignKeyViolation = "23503"
)

// Constraints names, by SQLSTATE (UniqueViolation, ForeignKeyViolation),
// the one constraint of each kind a statement can break.
type Constraints map[string]string

// Name gives err, from the statement c describes, the name of the
// statement's constraint of its kind when the server sent none: Citus
// relays a worker's error with its SQLSTATE, message, detail, hint and
// context only. The message, translated with lc_messages, is never read;
// the statement that failed is the witness instead. A name the server
// sent is kept.
func (c Constraints) Name(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName == "" {
		pgErr.ConstraintName = c[pgErr.Code]
	}
	return err
}

// InUse translates err from a statement that deletes rows, or changes the
// keys of rows, that others may reference: a foreign key violation there
// means a row is still referenced, a *ConflictError. The violation names the
// referencing table and constraint whichever side broke it, so only the
// statement's author can tell. Other errors pass through for Translate.
func InUse(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == ForeignKeyViolation {
		return &ConflictError{Constraint: pgErr.ConstraintName}
	}
	return err
}

// Translate maps a driver error to the store errors; errors it does not
// recognise pass through unchanged (and are answered as internal errors).
func Translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case UniqueViolation:
			return &ConflictError{Constraint: pgErr.ConstraintName}
		case ForeignKeyViolation:
			// Only the (translated) message tells a reference to a missing
			// row from a delete of a row still referenced; a delete says
			// so with InUse before the error gets here.
			return &ReferenceError{Constraint: pgErr.ConstraintName}
		case "23514", "23502", "22001", "22003", "22007", "22008", "22P02", "22021": // check, not null, too long, out of range, bad date/time, bad text, bad encoding
			return &InvalidError{Constraint: pgErr.ConstraintName}
		case "42501": // insufficient_privilege
			if pgErr.Routine == rlsCheckRoutine {
				// A write outside the bound tenant: as if the row did not exist.
				return ErrNotFound
			}
			return err
		// Classified by SQLSTATE alone, never by message text (which is
		// translated with lc_messages). 57014 is also what a cancel
		// request raises: the request's context has ended then, and no
		// one reads the answer.
		case "57014": // query_canceled
			return &TimeoutError{Setting: StatementTimeout}
		case "55P03": // lock_not_available
			return &TimeoutError{Setting: LockTimeout}
		case "25P03": // idle_in_transaction_session_timeout
			return &TimeoutError{Setting: IdleInTransactionTimeout}
		case "40001", "40P01", "53300", "57P01", "57P02", "57P03": // serialization, deadlock, too many connections, shutdown
			return errors.Join(ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return errors.Join(ErrUnavailable, err)
	}
	return err
}

// Unjoin returns the errors an errors.Join tree holds, leaves first, in
// order; any other error is one leaf, nil none. Validation reports a list
// of field errors this way.
func Unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Unjoin(e)...)
		}
		return out
	}
	return []error{err}
}
