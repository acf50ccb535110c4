package database_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
)

// Verify names each way a tenant database can break the invariants, in
// that database and no other, and finds nothing in clean ones; serve
// refuses to start on the critical ones.
func TestVerifyNamesEachFlaw(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	s := e.strategy(t)
	ctx := context.Background()
	if fs, err := s.Verify(ctx); err != nil || len(fs) > 0 {
		t.Fatalf("clean tenant databases: %v %v", fs, err)
	}
	server := e.adminConn(t, database.DefaultServer, "postgres")
	inA := e.adminConn(t, database.DefaultServer, a.Placement)
	db := a.Placement
	for _, flaw := range []struct {
		name, code, severity string
		in                   *pgx.Conn
		make, mend           string
	}{
		{"PUBLIC may connect", "database-public-connect", isolation.Critical, server,
			`GRANT CONNECT ON DATABASE ` + db + ` TO PUBLIC`, `REVOKE CONNECT ON DATABASE ` + db + ` FROM PUBLIC`},
		{"PUBLIC may create temporary tables", "database-public-connect", isolation.Critical, server,
			`GRANT TEMPORARY ON DATABASE ` + db + ` TO PUBLIC`, `REVOKE TEMPORARY ON DATABASE ` + db + ` FROM PUBLIC`},
		{"RLS not forced", "table-rls-not-forced", isolation.Critical, inA,
			`ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY`, `ALTER TABLE accounts FORCE ROW LEVEL SECURITY`},
		{"RLS disabled", "table-rls-disabled", isolation.Critical, inA,
			`ALTER TABLE accounts DISABLE ROW LEVEL SECURITY`, `ALTER TABLE accounts ENABLE ROW LEVEL SECURITY`},
		{"a permissive policy that ignores the tenant", "table-loose-policy", isolation.Critical, inA,
			`CREATE POLICY open ON accounts USING (true)`, `DROP POLICY open ON accounts`},
		{"the serving role owns a tenant table", "role-owns-tenant-table", isolation.Critical, inA,
			`ALTER TABLE accounts OWNER TO ` + isolation.AppRole, `ALTER TABLE accounts OWNER TO ` + isolation.OwnerRole},
		{"the serving role may truncate", "table-dangerous-grant", isolation.Critical, inA,
			`GRANT TRUNCATE ON accounts TO ` + isolation.AppRole, `REVOKE TRUNCATE ON accounts FROM ` + isolation.AppRole},
		{"a tenant table outside public without RLS", "table-rls-disabled", isolation.Critical, inA,
			`CREATE SCHEMA side; CREATE TABLE side.notes (tenant_id uuid, body text); GRANT USAGE ON SCHEMA side TO ` + isolation.AppRole +
				`; GRANT SELECT ON side.notes TO ` + isolation.AppRole,
			`DROP SCHEMA side CASCADE`},
	} {
		exec(t, flaw.in, flaw.make)
		fs, err := s.Verify(ctx)
		if err != nil {
			t.Fatalf("%s: %v", flaw.name, err)
		}
		found := false
		for _, f := range fs {
			if strings.Contains(f.Object, b.Placement) {
				t.Errorf("%s in %s's database is reported in %s's: %v", flaw.name, a.Slug, b.Slug, f)
			}
			if f.Code == flaw.code && f.Severity == flaw.severity && strings.Contains(f.Object, db) && f.Fix != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no %s finding naming %s among %v", flaw.name, flaw.code, db, fs)
		}
		if flaw.severity == isolation.Critical {
			var unsafe *isolation.UnsafeError
			if err := app.SafetyCheck(ctx, e.Pools, e.Registry); !errors.As(err, &unsafe) || !strings.Contains(err.Error(), flaw.code) {
				t.Errorf("%s: the safety check serve runs says %v", flaw.name, err)
			}
		}
		exec(t, flaw.in, flaw.mend)
		if fs, err := s.Verify(ctx); err != nil || len(fs) > 0 {
			t.Fatalf("after mending %s: %v %v", flaw.name, fs, err)
		}
	}
	// A database the control plane records but the server lacks.
	exec(t, server, `DROP DATABASE `+b.Placement+` WITH (FORCE)`)
	fs, err := s.Verify(ctx)
	if err != nil || len(fs) != 1 || fs[0].Code != "database-missing" || !strings.Contains(fs[0].Object, b.Placement) {
		t.Errorf("with %s's database dropped: %v %v", b.Slug, fs, err)
	}
}

// Setup is idempotent: run again it keeps the template, and it drops the
// template of earlier tenant migrations.
func TestSetupKeepsTheTemplateAndDropsStaleOnes(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	admin := e.adminConn(t, database.DefaultServer, "postgres")
	oid := func() uint32 {
		var o uint32
		if err := admin.QueryRow(context.Background(), `SELECT oid FROM pg_database WHERE datname = $1`, database.TemplateName()).Scan(&o); err != nil {
			t.Fatalf("template %s: %v", database.TemplateName(), err)
		}
		return o
	}
	before := oid()
	stale := "bulkhead_tpl_" + strings.Repeat("0", 15) + e.DB.Name[len(e.DB.Name)-1:]
	exec(t, admin, `CREATE DATABASE `+stale+` OWNER `+isolation.OwnerRole+` IS_TEMPLATE true ALLOW_CONNECTIONS false`)
	t.Cleanup(func() {
		admin.Exec(context.Background(), `ALTER DATABASE `+stale+` IS_TEMPLATE false`)
		admin.Exec(context.Background(), `DROP DATABASE IF EXISTS `+stale)
	})
	if err := e.strategy(t).Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := oid(); after != before {
		t.Errorf("setup rebuilt a current template (oid %d, then %d)", before, after)
	}
	if n := pgtest.Count(t, admin, `SELECT count(*) FROM pg_database WHERE datname = $1`, stale); n != 0 {
		t.Errorf("the stale template %s is still there", stale)
	}
	tn := e.Tenant(t, "after-setup")
	e.Must(t, 201, "POST", "/v1/accounts", tn.Editor, account(1))
}
