package isolation_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// verify runs what `bulkhead verify` runs, as the serving role of db.
func verify(t *testing.T, db *pgtest.DB) []isolation.Finding {
	t.Helper()
	return verifyAs(t, db.AppURL)
}

func verifyAs(t *testing.T, dsn string) []isolation.Finding {
	t.Helper()
	pool := pgtest.Pool(t, dsn)
	f, err := isolation.VerifyAll(context.Background(), pool, rls.New(pool, nil))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return f
}

// role creates a role of the test, replacing $ROLE in each statement (run
// as the superuser on db) with its quoted name, and returns the name. The
// role is dropped after the test, with what it owns.
func role(t *testing.T, db *pgtest.DB, stmts ...string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "verify_" + hex.EncodeToString(b)
	ident := pgx.Identifier{name}.Sanitize()
	db.Exec(t, `CREATE ROLE `+ident+` LOGIN PASSWORD '`+pgtest.AppPassword+`'`)
	t.Cleanup(func() {
		if t.Failed() { // pgtest keeps the database, and the role with it
			return
		}
		db.Exec(t, `REASSIGN OWNED BY `+ident+` TO `+isolation.OwnerRole)
		db.Exec(t, `DROP OWNED BY `+ident)
		db.Exec(t, `DROP ROLE `+ident)
	})
	for _, s := range stmts {
		db.Exec(t, strings.ReplaceAll(s, "$ROLE", ident))
	}
	return name
}

// dsnAs is db's serving DSN with user in place of the serving role.
func dsnAs(t *testing.T, db *pgtest.DB, user string) string {
	t.Helper()
	u, err := url.Parse(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, pgtest.AppPassword)
	return u.String()
}

func find(fs []isolation.Finding, code, object string) (isolation.Finding, bool) {
	for _, f := range fs {
		if f.Code == code && strings.Contains(f.Object, object) {
			return f, true
		}
	}
	return isolation.Finding{}, false
}

// A freshly migrated database has no finding at all.
func TestVerifyCleanDatabase(t *testing.T) {
	t.Parallel()
	if fs := verify(t, pgtest.New(t)); len(fs) != 0 {
		t.Fatalf("a fresh database has findings: %v", fs)
	}
}

// Each flaw, made on a throwaway database as the superuser, is named by its
// code, on its object, with a fix, at the severity serve acts on.
func TestVerifyNamesEachFlaw(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code, object, severity string
		flaw                   []string
	}{
		{isolation.CodeTableRLSDisabled, `"public"."accounts"`, isolation.Critical,
			[]string{`ALTER TABLE accounts DISABLE ROW LEVEL SECURITY`}},
		{isolation.CodeTableRLSNotForced, `"public"."accounts"`, isolation.Critical,
			[]string{`ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY`}},
		{isolation.CodeTableNoTenantPolicy, `"public"."accounts"`, isolation.Critical,
			[]string{`DROP POLICY tenant_isolation ON accounts`}},
		{isolation.CodeTableLoosePolicy, `"public"."accounts"`, isolation.Critical,
			[]string{`CREATE POLICY everyone ON accounts USING (true)`}},
		{isolation.CodeRoleOwnsTenantTable, `"public"."accounts"`, isolation.Critical,
			[]string{`ALTER TABLE accounts OWNER TO bulkhead_app`}},
		{isolation.CodeRoleMemberOfOwner, `"public"."accounts"`, isolation.Critical,
			[]string{`ALTER TABLE accounts OWNER TO $ROLE`, `GRANT $ROLE TO bulkhead_app`}},
		// A tenant table outside the strategies' schemas, which the serving
		// role can reach.
		{isolation.CodeTableRLSDisabled, `"reporting"."usage"`, isolation.Critical,
			[]string{`CREATE SCHEMA reporting`, `CREATE TABLE reporting.usage (tenant_id uuid, n int)`,
				`GRANT USAGE ON SCHEMA reporting TO bulkhead_app`, `GRANT SELECT ON reporting.usage TO bulkhead_app`}},
		// Partitions: the parent is sound, the partition is not.
		{isolation.CodeTableRLSDisabled, `"public"."usage_2026" (partition of usage)`, isolation.Critical, partitioned},
		{isolation.CodeTableNoTenantPolicy, `"public"."usage_2026" (partition of usage)`, isolation.Critical, partitioned},
		{isolation.CodeTableDangerousGrant, `"public"."accounts"`, isolation.Critical,
			[]string{`GRANT TRUNCATE ON accounts TO bulkhead_app`}},
		{isolation.CodeTableDangerousGrant, `"public"."accounts"`, isolation.Critical,
			[]string{`GRANT ALL ON accounts TO PUBLIC`}},
		{isolation.CodeTableDangerousGrant, `"public"."accounts"`, isolation.Critical,
			[]string{`GRANT REFERENCES (tenant_id, id) ON accounts TO bulkhead_app`}},
		{isolation.CodeTableDangerousGrant, `"public"."accounts"`, isolation.Critical,
			[]string{`GRANT TRIGGER ON accounts TO $ROLE`, `GRANT $ROLE TO bulkhead_app`}},
		{isolation.CodeDefaultDangerousGrant, "default privileges of bulkhead_owner in schema public", isolation.Warning,
			[]string{`ALTER DEFAULT PRIVILEGES FOR ROLE bulkhead_owner IN SCHEMA public GRANT ALL ON TABLES TO bulkhead_app`}},
		// A view run as a superuser; and one through another view.
		{isolation.CodeViewNotSecurityInvoker, `"public"."all_accounts"`, isolation.Critical,
			[]string{`CREATE VIEW all_accounts AS SELECT * FROM accounts`, `GRANT SELECT ON all_accounts TO bulkhead_app`}},
		{isolation.CodeViewNotSecurityInvoker, `"public"."outer_accounts"`, isolation.Critical,
			[]string{`CREATE VIEW inner_accounts WITH (security_invoker = true) AS SELECT * FROM accounts`,
				`CREATE VIEW outer_accounts AS SELECT id FROM inner_accounts`, `GRANT SELECT ON outer_accounts TO PUBLIC`}},
		// A view owned by a role bound by forced RLS: a warning.
		{isolation.CodeViewNotSecurityInvoker, `"public"."owner_accounts"`, isolation.Warning,
			[]string{`CREATE VIEW owner_accounts AS SELECT * FROM accounts`, `ALTER VIEW owner_accounts OWNER TO bulkhead_owner`,
				`GRANT SELECT ON owner_accounts TO bulkhead_app`}},
		{isolation.CodeMatviewOverTenantTable, `"public"."account_names"`, isolation.Critical,
			[]string{`CREATE MATERIALIZED VIEW account_names AS SELECT tenant_id, name FROM accounts`, `GRANT SELECT ON account_names TO bulkhead_app`}},
		{isolation.CodeFunctionImmutableSetting, "current_tenant()", isolation.Critical,
			[]string{`CREATE FUNCTION current_tenant() RETURNS uuid LANGUAGE sql IMMUTABLE
				AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$`}},
		{isolation.CodeFunctionImmutableSetting, "tenant_of()", isolation.Critical,
			[]string{`CREATE FUNCTION tenant_of() RETURNS text LANGUAGE plpgsql IMMUTABLE
				AS $$ BEGIN RETURN current_setting('app.tenant_id', true); END $$`}},
		{isolation.CodeFunctionDefinerBypasses, "count_accounts()", isolation.Critical,
			[]string{`CREATE FUNCTION count_accounts() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM accounts $$`}},
		{isolation.CodeFunctionDefinerBypasses, "count_accounts()", isolation.Critical,
			[]string{`CREATE FUNCTION count_accounts() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM accounts $$`,
				`ALTER FUNCTION count_accounts() OWNER TO $ROLE`, `ALTER ROLE $ROLE BYPASSRLS`}},
		// Owned by the tables' owner, on a table whose RLS is not forced.
		{isolation.CodeFunctionDefinerBypasses, "count_accounts()", isolation.Critical,
			[]string{`CREATE FUNCTION count_accounts() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM accounts $$`,
				`ALTER FUNCTION count_accounts() OWNER TO bulkhead_owner`, `ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY`}},
		{isolation.CodeControlWriteGrant, `table "bulkhead"."api_keys"`, isolation.Critical,
			[]string{`GRANT INSERT ON bulkhead.api_keys TO bulkhead_app`}},
		{isolation.CodeControlWriteGrant, `table "bulkhead"."tenants"`, isolation.Critical,
			[]string{`GRANT ALL ON bulkhead.tenants TO PUBLIC`}},
		// The serving role's UPDATE of api_keys.last_used_at is allowed;
		// any other column, or that one for anyone else, is not.
		{isolation.CodeControlWriteGrant, `table "bulkhead"."api_keys"`, isolation.Critical,
			[]string{`GRANT UPDATE (revoked_at) ON bulkhead.api_keys TO bulkhead_app`}},
		{isolation.CodeControlWriteGrant, `table "bulkhead"."api_keys"`, isolation.Critical,
			[]string{`GRANT UPDATE (last_used_at) ON bulkhead.api_keys TO PUBLIC`}},
		{isolation.CodeControlWriteGrant, `table "bulkhead"."audit_log"`, isolation.Critical,
			[]string{`GRANT UPDATE (reason) ON bulkhead.audit_log TO bulkhead_app`}},
		{isolation.CodeControlWriteGrant, `schema "bulkhead"`, isolation.Critical,
			[]string{`GRANT CREATE ON SCHEMA bulkhead TO PUBLIC`}},
		{isolation.CodeControlWriteGrant, `table "bulkhead"."key_grants"`, isolation.Critical,
			[]string{`ALTER TABLE bulkhead.key_grants OWNER TO $ROLE`, `GRANT $ROLE TO bulkhead_app`}},
	}
	for _, tc := range cases {
		t.Run(tc.code+" "+tc.object, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t)
			role(t, db, tc.flaw...)
			fs := verify(t, db)
			f, ok := find(fs, tc.code, tc.object)
			if !ok {
				t.Fatalf("after %q verify does not report %s on %s; it reports %v", tc.flaw, tc.code, tc.object, fs)
			}
			if f.Severity != tc.severity || f.Fix == "" || f.Detail == "" {
				t.Errorf("finding %v: want severity %s, a detail and a fix", f, tc.severity)
			}
		})
	}
}

var partitioned = []string{
	`CREATE TABLE usage (tenant_id uuid NOT NULL, day date NOT NULL) PARTITION BY RANGE (day)`,
	`ALTER TABLE usage ENABLE ROW LEVEL SECURITY`,
	`ALTER TABLE usage FORCE ROW LEVEL SECURITY`,
	`CREATE POLICY tenant_isolation ON usage USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)`,
	`CREATE TABLE usage_2026 PARTITION OF usage FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
	`GRANT SELECT ON usage, usage_2026 TO bulkhead_app`,
}

// A serving role that is superuser or BYPASSRLS is named.
func TestVerifyNamesABypassingServingRole(t *testing.T) {
	t.Parallel()
	for _, attr := range []struct{ attr, code string }{
		{"SUPERUSER", isolation.CodeRoleSuperuser},
		{"BYPASSRLS", isolation.CodeRoleBypassRLS},
	} {
		t.Run(attr.code, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t)
			name := role(t, db, `ALTER ROLE $ROLE `+attr.attr, `GRANT USAGE ON SCHEMA bulkhead TO $ROLE`)
			fs := verifyAs(t, dsnAs(t, db, name))
			if f, ok := find(fs, attr.code, name); !ok || f.Severity != isolation.Critical {
				t.Fatalf("serving as a %s role: verify reports %v", attr.attr, fs)
			}
		})
	}
}

// A serving role one SET ROLE away from a BYPASSRLS role (a grant of
// bulkhead_system, say) is named, though it has no bypass of its own.
func TestVerifyNamesAServingRoleThatCanBecomeABypasser(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	bypasser := role(t, db, `ALTER ROLE $ROLE NOLOGIN BYPASSRLS`)
	name := role(t, db, `GRANT USAGE ON SCHEMA bulkhead TO $ROLE`,
		`GRANT `+pgx.Identifier{bypasser}.Sanitize()+` TO $ROLE`)
	fs := verifyAs(t, dsnAs(t, db, name))
	if f, ok := find(fs, isolation.CodeRoleMemberOfBypasser, bypasser); !ok || f.Severity != isolation.Critical {
		t.Fatalf("serving as a member of a BYPASSRLS role: verify reports %v", fs)
	}
}

// What looks like a flaw but is not one is not reported: an invoker view, a
// STABLE function reading the setting, a SECURITY DEFINER function owned by
// the owner of tables under forced RLS, a tenant table the serving role
// cannot reach, REFERENCES on a table without tenant_id, and the serving
// role's SELECT on the control plane.
func TestVerifyIgnoresWhatIsSafe(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	for _, s := range []string{
		`CREATE VIEW my_accounts WITH (security_invoker = true) AS SELECT * FROM accounts`,
		`GRANT SELECT ON my_accounts TO bulkhead_app`,
		`CREATE FUNCTION current_tenant() RETURNS uuid LANGUAGE sql STABLE
			AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$`,
		`CREATE FUNCTION count_accounts() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM accounts $$`,
		`ALTER FUNCTION count_accounts() OWNER TO bulkhead_owner`,
		`CREATE SCHEMA archive`,
		`CREATE TABLE archive.accounts (tenant_id uuid, id uuid)`,
		`CREATE TABLE currencies (code text PRIMARY KEY)`,
		`GRANT ALL ON currencies TO bulkhead_app`,
	} {
		db.Exec(t, s)
	}
	if fs := verify(t, db); len(fs) != 0 {
		t.Fatalf("verify reports safe objects: %v", fs)
	}
}

// The SECURITY DEFINER finding is not theoretical: a superuser's definer
// function hands the serving role every tenant's rows, where one owned by
// the tables' owner under forced RLS does not.
func TestDefinerFunctionOfASuperuserBypasses(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	a, b := uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{a, b} {
		db.Exec(t, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $1, 'aws', 'x', 'x')`, id)
	}
	db.Exec(t, `CREATE FUNCTION su_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`)
	db.Exec(t, `CREATE FUNCTION owner_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`)
	db.Exec(t, `ALTER FUNCTION owner_count() OWNER TO bulkhead_owner`)
	pool := pgtest.Pool(t, db.AppURL)
	s := rls.New(pool, nil)
	var su, owner int
	err := s.Run(context.Background(), isolation.Tenant{ID: a, Slug: "a"}, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT su_count(), owner_count()`).Scan(&su, &owner)
	})
	if err != nil {
		t.Fatal(err)
	}
	if su != 2 || owner != 1 {
		t.Fatalf("bound to one tenant: the superuser's function counts %d rows (want both tenants' 2), the owner's %d (want 1)", su, owner)
	}
	fs := verify(t, db)
	if _, ok := find(fs, isolation.CodeFunctionDefinerBypasses, "su_count()"); !ok {
		t.Errorf("verify does not report su_count: %v", fs)
	}
	if _, ok := find(fs, isolation.CodeFunctionDefinerBypasses, "owner_count()"); ok {
		t.Errorf("verify reports owner_count, which forced RLS binds: %v", fs)
	}
}

// The version check: PostgreSQL before the releases that fixed the known
// RLS vulnerabilities, and before 15, is reported; those releases and
// later are not. (A throwaway server of an old release cannot be had here;
// the live check is TestVerifyCleanDatabase's, on the installed one.)
func TestVersionFindings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		num  int
		code string
	}{
		{90624, isolation.CodePostgresUnsupported},
		{140018, isolation.CodePostgresUnsupported},
		{150013, isolation.CodePostgresOutdated},
		{150014, ""},
		{150018, ""},
		{160009, isolation.CodePostgresOutdated},
		{160010, ""},
		{170005, isolation.CodePostgresOutdated},
		{170006, ""},
		{180000, ""},
	} {
		fs := isolation.VersionFindings(c.num)
		switch {
		case c.code == "" && len(fs) != 0:
			t.Errorf("%d: %v, want none", c.num, fs)
		case c.code != "" && (len(fs) != 1 || fs[0].Code != c.code || fs[0].Fix == ""):
			t.Errorf("%d: %v, want %s", c.num, fs, c.code)
		}
	}
}

// BenchmarkVerifyAll measures what serve adds to its start: every check on
// a freshly migrated database.
func BenchmarkVerifyAll(b *testing.B) {
	db := pgtest.New(b)
	pool := pgtest.Pool(b, db.AppURL)
	s := rls.New(pool, nil)
	for b.Loop() {
		if _, err := isolation.VerifyAll(context.Background(), pool, s); err != nil {
			b.Fatal(err)
		}
	}
}
