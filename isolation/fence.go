package isolation

// The move fence: how a tenant's storage is closed to the requests still
// routed to it once the tenant has moved elsewhere.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// MovedCode is the SQLSTATE the fence raises in a transaction bound to a
// placement the tenant has left.
const MovedCode = "BH001"

// MovedMark is the comment a tenant's schema or database carries once the
// tenant has moved out of it.
const MovedMark = "bulkhead: tenant moved out"

// ErrMoved means the transaction ran on a placement the tenant has left
// (or is leaving): nothing was written, and the work may be run again on
// the tenant's placement as the control plane now records it.
var ErrMoved = errors.New("tenant moved to another placement")

// fenceClass is the first key of the two-key advisory locks of the fence,
// so that they never meet the one-key locks used elsewhere.
const fenceClass = 0x42484d56 // "BHMV"

// FenceKey is the advisory lock of t's fence, as the two keys of
// pg_advisory_xact_lock(int, int) in SQL: every tenant transaction holds
// it shared, a mover's cut-over exclusive, in t's storage.
func FenceKey(id uuid.UUID) string {
	class, key := fenceKeys(id)
	return strconv.Itoa(int(class)) + ", " + strconv.Itoa(int(key))
}

// fenceKeys are the two keys of FenceKey.
func fenceKeys(id uuid.UUID) (class, key int32) {
	h := fnv.New32a()
	h.Write(id[:])
	return fenceClass, int32(h.Sum32())
}

// FenceSchema is the schema of the fence's functions, in the control
// plane's database (migrations/control, for shared tables and schemas) and
// in every tenant database (FenceDatabaseDDL).
const FenceSchema = "bulkhead_fence"

// FenceStep is the step that, run first in every transaction bound to t
// after the binding, takes t's fence lock shared (waiting while a move
// cuts over) and raises MovedCode when t's storage is no longer where t
// is served: for shared tables the control plane, which lives in the same
// database, says where t is; a schema or database of its own carries
// MovedMark. It calls the function of t's kind of storage in FenceSchema,
// which a session compiles once (an anonymous block would be compiled,
// and its query planned, on every transaction), with t's parsed id,
// derived names and fence keys only.
func FenceStep(t Tenant) (Step, error) {
	if t.ID == uuid.Nil {
		return Step{}, ErrNoTenant
	}
	class, key := fenceKeys(t.ID)
	keys := [2]string{strconv.Itoa(int(class)), strconv.Itoa(int(key))}
	switch t.Strategy {
	case RLS:
		return fenceCall("enter_shared", []string{t.ID.String(), keys[0], keys[1]}), nil
	case Schema:
		if t.Placement == "" {
			return Step{}, fmt.Errorf("fence %s: no schema recorded", t)
		}
		return fenceCall("enter_schema", []string{t.Placement, keys[0], keys[1]}), nil
	case Database:
		return fenceCall("enter_database", keys[:]), nil
	default:
		return Step{}, &UnknownStrategyError{Name: t.Strategy}
	}
}

// fenceCall is the step calling function fn of FenceSchema with args, all
// of them derived (a parsed UUID, a derived name, integers), its text
// built in one buffer: every tenant transaction builds one.
func fenceCall(fn string, args []string) Step {
	n := len("SELECT " + FenceSchema + ".()")
	for _, a := range args {
		n += len(a) + len("'', ")
	}
	var sql strings.Builder
	sql.Grow(n + len(fn))
	sql.WriteString("SELECT " + FenceSchema + ".")
	sql.WriteString(fn)
	sql.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			sql.WriteString(", ")
		}
		writeLiteral(&sql, a)
	}
	sql.WriteByte(')')
	return Step{SQL: sql.String(), Call: fenceCalls[fn], Args: args}
}

// fenceCalls are the fence functions' calls as Step.Call has them, by
// function: the same text for every tenant.
var fenceCalls = map[string]string{
	"enter_shared":   FenceSchema + ".enter_shared(?, ?, ?)",
	"enter_schema":   FenceSchema + ".enter_schema(?, ?, ?)",
	"enter_database": FenceSchema + ".enter_database(?, ?)",
}

// fenceDatabaseBody is the body of enter_database: the lock, then the
// mark Close leaves on the database, read from pg_shdescription itself (a
// query the session plans once; shobj_description's, a SQL function's,
// would be planned again in every transaction).
//
// The function runs with enable_seqscan off (fenceDatabaseSetting), which
// holds while the session plans that query: pg_database and
// pg_shdescription are small, and planned freely the query scanned both
// whole, in every transaction, with a file size lookup each: 37 µs of
// backend CPU a read against 10 µs for the shared tables' fence, an index
// probe (BenchmarkPointRead/hot40, perf). Off, each is an index probe.
var fenceDatabaseBody = `
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(class, key);
    IF EXISTS (SELECT FROM pg_catalog.pg_shdescription d
               WHERE d.objoid OPERATOR(pg_catalog.=) (SELECT db.oid FROM pg_catalog.pg_database db
                                                       WHERE db.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                 AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_database'::pg_catalog.regclass
                 AND d.description OPERATOR(pg_catalog.=) ` + quoteLiteral(MovedMark) + `) THEN
        RAISE EXCEPTION 'tenant moved' USING ERRCODE = '` + MovedCode + `';
    END IF;
END
`

// The setting enter_database runs with (see fenceDatabaseBody), as its
// SET clause and as pg_proc.proconfig records it.
const (
	fenceDatabaseSetting, fenceDatabaseValue = "enable_seqscan", "off"
)

// FenceDatabaseDDL is the statement that installs the fence's function in
// a tenant database, run as its owner: FenceSchema, and in it
// enter_database, which grantee (the serving role) may execute and no one
// else. It changes nothing where the function is already as it should be,
// so it can run on every migration; two at once in one database must be
// serialised by the caller (an advisory lock of the transaction).
func FenceDatabaseDDL(grantee string) string {
	to := pgx.Identifier{grantee}.Sanitize()
	fn := FenceSchema + ".enter_database(integer, integer)"
	return `DO $install$BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_proc
                   WHERE oid = pg_catalog.to_regprocedure(` + quoteLiteral(fn) + `)
                     AND prosrc = ` + quoteLiteral(fenceDatabaseBody) + `
                     AND proconfig IS NOT DISTINCT FROM ARRAY[` + quoteLiteral(fenceDatabaseSetting+"="+fenceDatabaseValue) + `]) THEN
        CREATE SCHEMA IF NOT EXISTS ` + FenceSchema + `;
        REVOKE ALL ON SCHEMA ` + FenceSchema + ` FROM PUBLIC;
        GRANT USAGE ON SCHEMA ` + FenceSchema + ` TO ` + to + `;
        CREATE OR REPLACE FUNCTION ` + FenceSchema + `.enter_database(class integer, key integer) RETURNS void
            LANGUAGE plpgsql VOLATILE SET ` + fenceDatabaseSetting + ` = ` + fenceDatabaseValue + ` AS $fn$` + fenceDatabaseBody + `$fn$;
        REVOKE ALL ON FUNCTION ` + fn + ` FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION ` + fn + ` TO ` + to + `;
    END IF;
END$install$`
}

// FenceDatabaseVersion names the fence FenceDatabaseDDL installs: a
// template of tenant databases built with another is stale.
func FenceDatabaseVersion() string {
	d := sha256.Sum256([]byte(FenceDatabaseDDL(AppRole)))
	return hex.EncodeToString(d[:4])
}

// quoteLiteral quotes s as an SQL string literal. The strings it is given
// are derived names (a schema name from a UUID) and constants.
func quoteLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	writeLiteral(&b, s)
	return b.String()
}

// writeLiteral writes s to b as quoteLiteral quotes it.
func writeLiteral(b *strings.Builder, s string) {
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b.WriteByte('\'')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('\'')
}

// IsMoved reports whether err is the fence's refusal.
func IsMoved(err error) bool {
	if errors.Is(err, ErrMoved) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == MovedCode
}

// Cutover takes t's fence lock exclusively in tx, which must be an owner
// transaction in t's storage (OwnerRunner.RunOwner): from then until tx
// ends, every other transaction bound to t waits at its begin.
func Cutover(ctx context.Context, tx pgx.Tx, t Tenant) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+FenceKey(t.ID)+")")
	return err
}

// Close marks t's storage as left, in tx (an owner transaction in it,
// holding Cutover's lock): requests still routed to it are refused with
// MovedCode from the commit on. Shared tables carry no mark: the control
// plane's record, switched in the same transaction, is theirs.
func Close(ctx context.Context, tx pgx.Tx, t Tenant) error {
	return mark(ctx, tx, t, "IS "+quoteLiteral(MovedMark))
}

// Reopen removes Close's mark (a move rolled back after its cut-over).
func Reopen(ctx context.Context, tx pgx.Tx, t Tenant) error {
	return mark(ctx, tx, t, "IS NULL")
}

func mark(ctx context.Context, tx pgx.Tx, t Tenant, is string) error {
	var stmt string
	switch t.Strategy {
	case RLS:
		return nil
	case Schema:
		stmt = "COMMENT ON SCHEMA " + pgx.Identifier{t.Placement}.Sanitize() + " " + is
	case Database:
		stmt = "COMMENT ON DATABASE " + pgx.Identifier{t.Placement}.Sanitize() + " " + is
	default:
		return &UnknownStrategyError{Name: t.Strategy}
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("mark %s: %w", t, err)
	}
	return nil
}

// Closed reports whether t's storage carries Close's mark, read in tx (a
// transaction in t's storage).
func Closed(ctx context.Context, tx pgx.Tx, t Tenant) (bool, error) {
	var q string
	switch t.Strategy {
	case RLS:
		return false, nil
	case Schema:
		q = "SELECT coalesce(obj_description(to_regnamespace($1), 'pg_namespace') = $2, false)"
	case Database:
		q = "SELECT coalesce(shobj_description((SELECT oid FROM pg_database WHERE datname = $1), 'pg_database') = $2, false)"
	default:
		return false, &UnknownStrategyError{Name: t.Strategy}
	}
	var closed bool
	err := tx.QueryRow(ctx, q, t.Placement, MovedMark).Scan(&closed)
	return closed, err
}

// Fenceable reports whether the fence knows how tenants of the strategy
// named name keep their storage (FenceStatement, Close): only those can be
// moved, and the others' transactions need no fence.
func Fenceable(name string) bool { return name == RLS || name == Schema || name == Database }

// InControlDatabase reports whether tenants of the strategy named name keep
// their storage in the control plane's database (shared tables, a schema),
// where one transaction can both close it and switch the tenant's record.
func InControlDatabase(name string) bool { return name == RLS || name == Schema }

// OwnerRunner is a Strategy whose tenant storage the owner can work in: a
// mover copies, compares and closes a tenant's storage with it.
type OwnerRunner interface {
	// RunOwner runs fn in one owner transaction in t's storage, bound to
	// t (the tenant policy still applies), with t's tables first on the
	// search_path, and commits it when fn returns nil.
	RunOwner(ctx context.Context, t Tenant, fn func(pgx.Tx) error) error
}

// Steps of the context (WithSteps) run in a transaction's BEGIN.
type statementsKey struct{}

// WithSteps returns ctx carrying steps after those it carries already:
// the transactions Run opens under it run them in their BEGIN, after the
// binding and the bounds (BindRun).
func WithSteps(ctx context.Context, steps ...Step) context.Context {
	return context.WithValue(ctx, statementsKey{}, append(slices.Clip(statementsFrom(ctx)), steps...))
}

// WithStatements is WithSteps of statements of their own (Statement). A
// statement that must come before any query (SET TRANSACTION ISOLATION
// LEVEL) goes there rather than first in fn, since the move fence's step
// is a query. They must be built from trusted, derived text only.
func WithStatements(ctx context.Context, stmts ...string) context.Context {
	steps := make([]Step, len(stmts))
	for i, s := range stmts {
		steps[i] = Statement(s)
	}
	return WithSteps(ctx, steps...)
}

func statementsFrom(ctx context.Context) []Step {
	s, _ := ctx.Value(statementsKey{}).([]Step)
	return s
}
