package isolation_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// GrantDatabase takes TEMPORARY from PUBLIC, as CREATE DATABASE leaves it;
// run by a role that may not (not the database's owner), it says what is
// left to run rather than leave the serving role able to make temporary
// tables.
func TestGrantDatabaseRevokesTemporary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Empty(t)
	ident := pgx.Identifier{db.Name}.Sanitize()
	temp := func() bool {
		t.Helper()
		return pgtest.Count(t, pgtest.Pool(t, db.AdminURL), `SELECT has_database_privilege($1, current_database(), 'TEMPORARY')::int`, isolation.AppRole) == 1
	}

	db.Exec(t, `GRANT TEMPORARY ON DATABASE `+ident+` TO PUBLIC`)
	name := "migrator_" + strings.ToLower(db.Name[len(db.Name)-8:])
	db.Exec(t, `CREATE ROLE `+name+` LOGIN CREATEROLE PASSWORD '`+pgtest.AppPassword+`'`)
	t.Cleanup(func() {
		if !t.Failed() {
			db.Exec(t, `DROP OWNED BY `+name+`; DROP ROLE `+name)
		}
	})
	u, err := url.Parse(db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(name, pgtest.AppPassword)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var missing *isolation.TempPrivilegeError
	if err := isolation.GrantDatabase(ctx, conn); !errors.As(err, &missing) || !strings.Contains(err.Error(), "REVOKE TEMPORARY ON DATABASE "+ident+" FROM PUBLIC") {
		t.Fatalf("GrantDatabase by a role that does not own the database: %v, want what to run", err)
	}
	if !temp() {
		t.Fatal("the serving role lost TEMPORARY, so the case above tested nothing")
	}

	admin, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if err := isolation.GrantDatabase(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if temp() {
		t.Error("the serving role may still create temporary tables")
	}
}
