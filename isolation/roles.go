package isolation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the catalog helpers need of a connection, pool or
// transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// roleSpec is a role Bulkhead needs and the attributes it must have.
type roleSpec struct {
	name   string
	create string // attributes for CREATE ROLE
	alter  string // attributes enforced on an existing role, or ""
	ok     string // pg_roles predicate true when alter is not needed
}

func roleSpecs(system bool) []roleSpec {
	specs := []roleSpec{
		// The owner runs DDL: it creates tenant schemas, roles and
		// databases. It never bypasses RLS: forced RLS binds it too.
		{OwnerRole, "NOLOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE CREATEDB", "NOSUPERUSER NOBYPASSRLS CREATEROLE CREATEDB",
			"NOT rolsuper AND NOT rolbypassrls AND rolcreaterole AND rolcreatedb"},
		// The serving role: NOINHERIT, so that membership in a tenant role
		// (schema strategy) grants nothing until SET ROLE.
		{AppRole, "LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE", "NOINHERIT", "NOT rolinherit"},
	}
	if system {
		specs = append(specs, roleSpec{SystemRole, "NOLOGIN NOINHERIT NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE", "", "true"})
	}
	return specs
}

// MissingRolesError names the roles that do not exist and could not be
// created with the connection's privileges, with the statements that would.
type MissingRolesError struct {
	Roles      []string
	Statements []string
}

func (e *MissingRolesError) Error() string {
	return fmt.Sprintf("missing roles %s: connect as a role that may create them, or run: %s",
		strings.Join(e.Roles, ", "), strings.Join(e.Statements, "; "))
}

// EnsureRoles makes sure Bulkhead's roles exist: the owner, the serving role
// and, when system is set, the system role. Roles that are missing are
// created when conn's user may (superuser, or CREATEROLE for roles without
// BYPASSRLS); otherwise a *MissingRolesError names them. It is idempotent,
// and lets conn's user act as the owner (SET ROLE) by granting it the owner
// role when needed.
func EnsureRoles(ctx context.Context, conn Querier, system bool) error {
	// Roles are global to the cluster, and migrators of different databases
	// race for them: PostgreSQL reports a lost race as "tuple concurrently
	// updated", an internal error (XX000) with no SQLSTATE of its own.
	// Everything here is idempotent, so run again, a few times: an
	// internal error of another kind fails the same way each time.
	for attempt := 0; ; attempt++ {
		err := ensureRoles(ctx, conn, system)
		var pgErr *pgconn.PgError
		if attempt < 5 && errors.As(err, &pgErr) && pgErr.Code == "XX000" {
			continue
		}
		return err
	}
}

func ensureRoles(ctx context.Context, conn Querier, system bool) error {
	var super, createRole bool
	if err := conn.QueryRow(ctx,
		`SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user`,
	).Scan(&super, &createRole); err != nil {
		return fmt.Errorf("read current role: %w", err)
	}
	missing := &MissingRolesError{}
	for _, spec := range roleSpecs(system) {
		var exists, ok bool
		if err := conn.QueryRow(ctx, `SELECT count(*) > 0, COALESCE(bool_and(`+spec.ok+`), false) FROM pg_roles WHERE rolname = $1`,
			spec.name).Scan(&exists, &ok); err != nil {
			return fmt.Errorf("look up role %s: %w", spec.name, err)
		}
		ident := pgx.Identifier{spec.name}.Sanitize()
		switch {
		case exists && !ok && spec.alter != "" && (super || createRole):
			if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" "+spec.alter); err != nil {
				return fmt.Errorf("alter role %s: %w", spec.name, err)
			}
		case exists:
		case super || (createRole && !strings.Contains(spec.create, " BYPASSRLS")):
			if _, err := conn.Exec(ctx, "CREATE ROLE "+ident+" "+spec.create); err != nil {
				if !isDuplicate(err) { // another migrator won the race
					return fmt.Errorf("create role %s: %w", spec.name, err)
				}
			}
		default:
			missing.Roles = append(missing.Roles, spec.name)
			missing.Statements = append(missing.Statements, "CREATE ROLE "+ident+" "+spec.create)
		}
	}
	if len(missing.Roles) > 0 {
		return missing
	}
	if super {
		return nil
	}
	// The migrator acts as the owner (SET ROLE), and operator commands as
	// the system role: its login must be a member of both.
	acts := []string{OwnerRole}
	if system {
		acts = append(acts, SystemRole)
	}
	for _, role := range acts {
		var member bool
		if err := conn.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, role).Scan(&member); err != nil {
			return fmt.Errorf("check membership in %s: %w", role, err)
		}
		if !member {
			if _, err := conn.Exec(ctx, "GRANT "+pgx.Identifier{role}.Sanitize()+" TO CURRENT_USER"); err != nil {
				return fmt.Errorf("let the migrate role act as %s: %w", role, err)
			}
		}
	}
	return nil
}

// GrantDatabase gives the owner and the serving role what they need on the
// current database, and the serving role nothing more: the owner may
// create schemas and tables in public, the serving role may connect and
// use public, and PUBLIC — so the serving role — may not create temporary
// tables (one named like a tenant table would shadow it for the rest of a
// pooled session). Needs the database's owner or a superuser; a
// *TempPrivilegeError says what is left to do when the serving role keeps
// TEMPORARY. Idempotent.
func GrantDatabase(ctx context.Context, conn Querier) error {
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	for _, stmt := range databaseGrants(db) {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	// A REVOKE by a role that did not grant the privilege only warns:
	// check what it achieved.
	var temp bool
	if err := conn.QueryRow(ctx, `SELECT has_database_privilege($1, current_database(), 'TEMPORARY')`, AppRole).Scan(&temp); err != nil {
		return fmt.Errorf("check %s's privileges on %s: %w", AppRole, db, err)
	}
	if temp {
		return &TempPrivilegeError{Database: db}
	}
	return nil
}

// databaseGrants are the statements of GrantDatabase for database db.
func databaseGrants(db string) []string {
	dbIdent := pgx.Identifier{db}.Sanitize()
	owner, app := pgx.Identifier{OwnerRole}.Sanitize(), pgx.Identifier{AppRole}.Sanitize()
	return []string{
		"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE " + dbIdent + " TO " + owner,
		"GRANT CONNECT ON DATABASE " + dbIdent + " TO " + app,
		"REVOKE TEMPORARY ON DATABASE " + dbIdent + " FROM PUBLIC, " + app,
		"GRANT USAGE, CREATE ON SCHEMA public TO " + owner,
		"GRANT USAGE ON SCHEMA public TO " + app,
	}
}

// TempPrivilegeError says that the serving role may still create temporary
// tables in Database, which the migrate DSN could not revoke: the
// statement a role that may (the database's owner, a superuser, or whoever
// granted it) must run.
type TempPrivilegeError struct{ Database string }

func (e *TempPrivilegeError) Error() string {
	db := pgx.Identifier{e.Database}.Sanitize()
	return fmt.Sprintf("%s may create temporary tables in database %s, and the migrate role could not revoke it: "+
		"connect as the database's owner, or run: REVOKE TEMPORARY ON DATABASE %s FROM PUBLIC, %s (and from any role %s is a member of)",
		AppRole, e.Database, db, pgx.Identifier{AppRole}.Sanitize(), AppRole)
}

// AsOwner is the statement a migrator's session runs so that everything it
// creates is owned by the owner role.
var AsOwner = "SET ROLE " + pgx.Identifier{OwnerRole}.Sanitize()

// BecomeOwner runs AsOwner on c: the AfterConnect of every owner
// connection and pool, so that the one way to act as the owner is said
// once. Its session then holds the role, so an owner connection must reach
// PostgreSQL directly, never through a transaction-mode pooler.
func BecomeOwner(ctx context.Context, c *pgx.Conn) error {
	_, err := c.Exec(ctx, AsOwner)
	return err
}

func isDuplicate(err error) bool {
	var pgErr *pgconn.PgError
	if !asPgError(err, &pgErr) {
		return false
	}
	return pgErr.Code == "42710" || pgErr.Code == "23505" // duplicate_object, unique_violation
}
