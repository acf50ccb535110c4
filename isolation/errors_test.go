package isolation_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// What PostgreSQL really raises when a cached statement meets other
// tables, checked on a server answering in German: a table of another
// shape under the new search_path is 0A000, a stale plan that a fresh
// statement cures; no table at all under it is a plain 42P01, which no
// retry cures and StalePlan does not claim.
func TestStalePlanIsTheSQLSTATEPostgreSQLRaises(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Empty(t)
	db.Translated(t)
	db.Exec(t, `CREATE SCHEMA narrow; CREATE TABLE narrow.t (name text);
		CREATE SCHEMA wide; CREATE TABLE wide.t (name varchar(200));
		CREATE SCHEMA bare`)
	cfg, err := pgx.ParseConfig(db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	read := func(schema string) error {
		if _, err := conn.Exec(ctx, `SET search_path = `+schema); err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, `SELECT name FROM t`)
		if err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}
	if err := read("narrow"); err != nil {
		t.Fatal(err)
	}
	err = read("wide")
	if code(err) != "0A000" || !isolation.StalePlan(err) {
		t.Errorf("the same statement on a wider column: got %v (SQLSTATE %s), want a stale plan (0A000)", err, code(err))
	}
	if err := read("wide"); err != nil {
		t.Errorf("run again, on a fresh statement: %v", err)
	}
	err = read("bare")
	if code(err) != "42P01" || isolation.StalePlan(err) {
		t.Errorf("the same statement where there is no table: got %v (SQLSTATE %s, stale %v), want 42P01, not stale", err, code(err), isolation.StalePlan(err))
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "does not exist") {
		t.Errorf("the server answered in English (%q): this test proves nothing", pgErr.Message)
	}
}

func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
