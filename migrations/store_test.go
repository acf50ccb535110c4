package migrations_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// goose looks for the tenant version table through to_regclass (one index
// probe) rather than pg_tables (every goose_tenant of every schema): it
// must still look only in the current schema, where it would create the
// table, and not in a later schema of the search_path, where to_regclass
// of the bare name would find one (and goose then take the schema for
// migrated).
func TestTenantVersionTableIsLookedForInTheCurrentSchema(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.Empty(t)
	db.Exec(t, `CREATE SCHEMA a; CREATE SCHEMA b`)
	sqlDB, err := sql.Open("pgx", db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(1) // one session: its search_path is what goose sees
	up := func(searchPath string) {
		t.Helper()
		if _, err := sqlDB.ExecContext(ctx, `SET search_path = `+searchPath); err != nil {
			t.Fatal(err)
		}
		p, err := migrations.Tenant.Provider(sqlDB, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("up with search_path %s: %v", searchPath, err)
		}
	}
	up("b")
	up("a, b")
	var version int64
	if err := sqlDB.QueryRowContext(ctx, `SELECT max(version_id) FROM a.goose_tenant WHERE is_applied`).Scan(&version); err != nil {
		t.Fatalf("a's version table: %v", err)
	}
	if version != migrations.Tenant.Head() {
		t.Errorf("a is at version %d, want the head %d", version, migrations.Tenant.Head())
	}
	var tables int
	if err := sqlDB.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'a' AND tablename = 'accounts'`).Scan(&tables); err != nil || tables != 1 {
		t.Errorf("a.accounts: %d tables (%v), want the tenant tables made in a", tables, err)
	}
}
