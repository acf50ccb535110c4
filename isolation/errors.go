package isolation

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// StalePlan reports whether err is PostgreSQL refusing a prepared statement
// whose result type changed since it was prepared ("cached plan must not
// change result type"), as it does when one connection serves tenants whose
// tables sit at different versions. pgx forgets the statement on the error,
// so running the transaction again prepares it afresh.
//
// It reads the SQLSTATE alone, never the message, which lc_messages
// translates. 0A000 (feature_not_supported) is also what a few statements
// PostgreSQL cannot run raise; those fail the same way when run again, so
// the price of the broader match is one more attempt on a statement that
// was wrong anyway. A search_path change does not raise anything of its
// own: PostgreSQL re-plans the statement for the new path, and a table the
// new path lacks is a plain 42P01, which no retry cures.
func StalePlan(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000"
}
