package schema_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// A database provisioned by the strategy has no finding: not from the
// strategy, nor from the checks every strategy's database gets.
func TestVerifyCleanDatabase(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	findings, err := verify.All(ctx, f.app, f.strategy)
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 0 {
		t.Errorf("findings on a clean database: %v", findings)
	}
}

// tempRole creates a role for one test, with a random name, dropped (with
// whatever it was granted in db) when the test ends.
func tempRole(t *testing.T, db *pgtest.DB, attrs string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	return namedRole(t, db, "flaw_"+hex.EncodeToString(b), attrs)
}

// namedRole is tempRole with the name given.
func namedRole(t *testing.T, db *pgtest.DB, name, attrs string) string {
	t.Helper()
	db.Exec(t, `CREATE ROLE `+name+` `+attrs)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, db.AdminURL)
		if err != nil {
			t.Logf("drop role %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP OWNED BY `+name+`; DROP ROLE `+name); err != nil {
			t.Logf("drop role %s: %v", name, err)
		}
	})
	return name
}

// Each flaw, made as the superuser, is named by Verify with its stable
// code and the object it concerns; the superuser's serve-time check
// (app.SafetyCheck) refuses to serve on it.
func TestVerifyNamesEachFlaw(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// flaw is SQL with {A} and {B} for the two tenants' quoted names,
		// {a} for A's bare name, {X} for a role made for the case and {N}
		// for a NOINHERIT login role made for it.
		flaw   string
		code   string
		object string // with the same placeholders
	}{
		{"another role inherits a tenant role", `GRANT {A} TO {X}`, schema.CodeMemberInherits, "role {X}"},
		{"a NOINHERIT login role may SET ROLE to a tenant role", `GRANT {A} TO {N}`, schema.CodeMemberSetsRole, "role {N}"},
		{"tenant role may use another schema", `GRANT USAGE ON SCHEMA {B} TO {A}`, schema.CodeRoleOutside, "role {a}"},
		{"tenant role may read another tenant's table", `GRANT SELECT ON {B}.accounts TO {A}`, schema.CodeRoleOutside, "role {a}"},
		{"tenant role may read a shared table", `GRANT SELECT (name) ON public.accounts TO {A}`, schema.CodeRoleOutside, "role {a}"},
		{"tenant role is a member of another tenant's", `GRANT {B} TO {A}`, schema.CodeRoleOutside, "role {a}"},
		{"tenant role reads everything", `GRANT pg_read_all_data TO {A}`, schema.CodeRoleOutside, "role {a}"},
		// On Citus tenant roles are LOGIN by design: there the case
		// asserts that verify accepts it.
		{"tenant role may log in", `ALTER ROLE {A} LOGIN`, schema.CodeRoleOutside, "role {a}"},
		{"tenant role owns its table", `ALTER TABLE {A}.accounts OWNER TO {A}`, schema.CodeRoleOutside, "role {a}"},
		{"PUBLIC may use a tenant schema", `GRANT USAGE ON SCHEMA {A} TO PUBLIC`, schema.CodePublicRights, "schema {A}"},
		{"PUBLIC may read a tenant table", `GRANT SELECT ON {A}.accounts TO PUBLIC`, schema.CodePublicRights, `table {A}."accounts"`},
		{"PUBLIC may read a tenant column", `GRANT SELECT (name) ON {A}.accounts TO PUBLIC`, schema.CodePublicRights, `column "name" of table {A}."accounts"`},
		{"serving role may use a tenant schema", `GRANT USAGE ON SCHEMA {A} TO bulkhead_app`, schema.CodeAppRights, "schema {A}"},
		{"another role may read a tenant table", `GRANT SELECT ON {A}.accounts TO {X}`, schema.CodeForeignRights, `table {A}."accounts"`},
		{"tenant table RLS not forced", `ALTER TABLE {A}.accounts NO FORCE ROW LEVEL SECURITY`, "table-rls-not-forced", `table {A}."accounts"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, options{})
			x := tempRole(t, f.db, "NOLOGIN INHERIT")
			n := tempRole(t, f.db, "LOGIN NOINHERIT")
			subst := strings.NewReplacer("{A}", ident(f.tenants[0]), "{a}", schema.Name(f.tenants[0].ID), "{B}", ident(f.tenants[1]), "{X}", x, "{N}", n)
			f.db.Exec(t, subst.Replace(tc.flaw))
			if tc.name == "tenant role may log in" && pgtest.Citus(t) {
				findings, err := f.strategy.Verify(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(findings) != 0 {
					t.Fatalf("on Citus, where tenant roles are LOGIN: findings %v", findings)
				}
				return
			}
			assertFinding(t, f, tc.code, subst.Replace(tc.object))
		})
	}
}

// The harmless look-alike of schema-member-sets-role: a NOINHERIT login
// role granted a role named like a tenant role, whose schema is in no
// database here, is none of this database's tenants' business; and a
// tenant role's own membership in nothing is what provisioning leaves.
func TestVerifyIgnoresAMemberOfAnotherDatabasesTenantRole(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	n := tempRole(t, f.db, "LOGIN NOINHERIT")
	other := namedRole(t, f.db, schema.Name(uuid.New()), "NOLOGIN NOINHERIT")
	f.db.Exec(t, `GRANT `+other+` TO `+n)
	findings, err := verify.All(context.Background(), f.app, f.strategy)
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 0 {
		t.Errorf("findings: %v", findings)
	}
}

func assertFinding(t *testing.T, f *fixture, code, object string) {
	t.Helper()
	ctx := context.Background()
	findings, err := f.strategy.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fd := range findings {
		if fd.Code == code && fd.Object == object && fd.Severity == isolation.Critical && fd.Fix != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no critical %s finding on %s; got %v", code, object, findings)
	}
	err = app.SafetyCheck(ctx, f.pools, isolation.RegistryOf(f.strategy))
	if _, unsafe := err.(*isolation.UnsafeError); !unsafe || !strings.Contains(err.Error(), code) {
		t.Errorf("the safety check lets the server start: %v", err)
	}
}

// A serving role that inherits a tenant role's privileges reads the tenant's
// table without being bound to it, and Verify, run as that role, names it.
// (The flaw is made on a serving role of the test's own: bulkhead_app is
// shared by every test of the cluster.)
func TestVerifyNamesAnInheritingServingRole(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	x := tempRole(t, f.db, "LOGIN INHERIT PASSWORD 'flaw'")
	a := f.tenants[0]
	f.db.Exec(t, `GRANT `+ident(a)+` TO `+x)
	u, err := url.Parse(f.db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(x, "flaw")
	serving, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer serving.Close()
	// The flaw is real: no binding, yet the tenant's table reads.
	if _, err := serving.Exec(ctx, `SELECT count(*) FROM `+ident(a)+`.accounts`); err != nil {
		t.Fatalf("the inheriting role cannot read the tenant's table, so the flaw was not made: %v", err)
	}
	findings, err := schema.New(serving, nil).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fd := range findings {
		found = found || (fd.Code == schema.CodeAppInherits && fd.Object == "role "+x)
	}
	if !found {
		t.Fatalf("no %s finding on role %s; got %v", schema.CodeAppInherits, x, findings)
	}
}

// A view in one tenant's schema over another tenant's table, granted to
// the first tenant's role, is named though the serving role reaches it only
// by SET ROLE: verify looks at what the serving role may read as any role
// it may act as.
func TestVerifyNamesAViewATenantRoleReads(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	a, b := ident(f.tenants[0]), ident(f.tenants[1])
	f.db.Exec(t, `CREATE VIEW `+a+`.peek AS SELECT * FROM `+b+`.accounts`)
	f.db.Exec(t, `ALTER VIEW `+a+`.peek OWNER TO bulkhead_owner`)
	f.db.Exec(t, `GRANT SELECT ON `+a+`.peek TO `+a)
	findings, err := verify.All(context.Background(), f.app, f.strategy)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range findings {
		if fd.Code == verify.CodeViewNotSecurityInvoker && fd.Object == "view "+a+`."peek"` {
			return
		}
	}
	t.Fatalf("no %s finding on %s.peek; got %v", verify.CodeViewNotSecurityInvoker, a, findings)
}
