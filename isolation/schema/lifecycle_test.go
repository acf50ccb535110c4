package schema_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// leftovers counts what of the tenant role and schema called name remains
// anywhere in the catalogs: the role, the schema, memberships, dependencies
// recorded on the role (grants and ownership, in any database) and ACL
// entries naming it.
func leftovers(t *testing.T, db *pgtest.DB, name string, roleOID uint32) map[string]int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	out := map[string]int{}
	for what, sql := range map[string]string{
		"pg_roles":        `SELECT count(*) FROM pg_roles WHERE rolname = $1 OR oid = $2`,
		"pg_namespace":    `SELECT count(*) FROM pg_namespace WHERE nspname = $1 OR nspowner = $2`,
		"pg_auth_members": `SELECT count(*) FROM pg_auth_members WHERE $1 <> '' AND (roleid = $2 OR member = $2)`,
		"pg_shdepend":     `SELECT count(*) FROM pg_shdepend WHERE $1 <> '' AND refclassid = 'pg_authid'::regclass AND refobjid = $2`,
		"ACLs": `SELECT (SELECT count(*) FROM pg_class, aclexplode(relacl) a WHERE $2 <> 0 AND a.grantee = $2)
		              + (SELECT count(*) FROM pg_namespace, aclexplode(nspacl) a WHERE $2 <> 0 AND a.grantee = $2)
		              + (SELECT count(*) FROM pg_database, aclexplode(datacl) a WHERE $2 <> 0 AND a.grantee = $2)
		              + (SELECT count(*) FROM pg_class WHERE relacl::text LIKE '%' || $1 || '%')
		              + (SELECT count(*) FROM pg_namespace WHERE nspacl::text LIKE '%' || $1 || '%')`,
	} {
		if n := pgtest.Count(t, conn, sql, name, roleOID); n != 0 {
			out[what] = n
		}
	}
	return out
}

func roleOID(t *testing.T, f *fixture, name string) uint32 {
	t.Helper()
	var oid uint32
	if err := f.owner.QueryRow(context.Background(), `SELECT oid FROM pg_roles WHERE rolname = $1`, name).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	return oid
}

// Deprovisioning drops the schema and the role and leaves no privilege
// behind — even grants a mistake put outside the tenant's schema — and
// leaves the other tenant whole. A grant the owner role cannot revoke
// stops it before anything is dropped, naming the grant; once that is
// revoked, a re-run completes. Doing it again is not an error.
func TestDeprovisionLeavesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	a, b := f.tenants[0], f.tenants[1]
	name := schema.Name(a.ID)
	oid := roleOID(t, f, name)
	// Stray grants the owner role may revoke: on the shared tables, on B's
	// schema and table, a membership.
	f.db.Exec(t, `GRANT SELECT ON public.accounts TO `+ident(a))
	f.db.Exec(t, `GRANT USAGE ON SCHEMA `+ident(b)+` TO `+ident(a))
	f.db.Exec(t, `GRANT SELECT ON `+ident(b)+`.accounts TO `+ident(a))
	f.db.Exec(t, `GRANT pg_read_all_data TO `+ident(a))
	// And one it may not: the database's owner (the superuser) grants on it.
	db := pgx.Identifier{f.db.Name}.Sanitize()
	f.db.Exec(t, `GRANT TEMPORARY ON DATABASE `+db+` TO `+ident(a))
	err := f.strategy.Deprovision(ctx, a)
	if err == nil || !strings.Contains(err.Error(), "privileges for database "+f.db.Name) {
		t.Fatalf("deprovisioning past a grant it cannot revoke: got %v, want an error naming it", err)
	}
	err = f.strategy.Run(ctx, a, func(tx pgx.Tx) error {
		if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != rowsPer {
			t.Errorf("after a failed deprovisioning %s has %d rows, want %d", a.Slug, n, rowsPer)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.db.Exec(t, `REVOKE ALL ON DATABASE `+db+` FROM `+ident(a))
	if got := leftovers(t, f.db, name, oid); len(got) == 0 {
		t.Fatal("the leftover check finds nothing before deprovisioning: it checks nothing")
	}
	for range 2 {
		if err := f.strategy.Deprovision(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if got := leftovers(t, f.db, name, oid); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
	err = f.strategy.Run(ctx, b, func(tx pgx.Tx) error {
		if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != rowsPer {
			t.Errorf("%s has %d rows left, want %d", b.Slug, n, rowsPer)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A's transactions now fail: its role is gone.
	if err := f.strategy.Run(ctx, a, func(pgx.Tx) error { return nil }); err == nil {
		t.Error("a deprovisioned tenant's transaction ran")
	}
}

// A provisioning that fails half-way (here: the tenant migration, refused
// by an event trigger) leaves neither schema nor role behind; one that
// fails because the tenant exists leaves the existing tenant alone.
func TestProvisionFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1})
	ctx := context.Background()
	f.db.Exec(t, `CREATE FUNCTION refuse_policies() RETURNS event_trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'no policies today'; END $$`)
	f.db.Exec(t, `CREATE EVENT TRIGGER refuse_policies ON ddl_command_start WHEN TAG IN ('CREATE POLICY') EXECUTE FUNCTION refuse_policies()`)
	tn := isolation.Tenant{ID: uuid.New(), Slug: "doomed", Strategy: isolation.Schema}
	if _, err := f.strategy.Provision(ctx, tn); err == nil {
		t.Fatal("provisioning succeeded despite the failing migration")
	}
	if got := leftovers(t, f.db, schema.Name(tn.ID), 0); len(got) != 0 {
		t.Errorf("a failed provisioning left behind: %v", got)
	}
	f.db.Exec(t, `DROP EVENT TRIGGER refuse_policies`)

	existing := f.tenants[0]
	if _, err := f.strategy.Provision(ctx, existing); err == nil {
		t.Fatal("provisioning an existing tenant again succeeded")
	}
	err := f.strategy.Run(ctx, existing, func(tx pgx.Tx) error {
		if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != rowsPer {
			t.Errorf("%s has %d rows after a second provisioning, want %d", existing.Slug, n, rowsPer)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A slug full of SQL is refused by validation; were it to get through, it
// reaches no DDL: names derive from the UUID alone.
func TestSlugFullOfSQLReachesNoDDL(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1})
	ctx := context.Background()
	const evil = `a"; drop schema x; --`
	if control.ValidSlug(evil) {
		t.Fatalf("slug %q passes validation", evil)
	}
	svc := newControl(t, f)
	var invalid *store.ValidationError
	if _, err := svc.CreateTenant(ctx, evil, ""); !errors.As(err, &invalid) || invalid.Field != "slug" {
		t.Fatalf("CreateTenant(%q): got %v, want a validation error on slug", evil, err)
	}
	// Past validation, straight to the strategy.
	f.db.Exec(t, `CREATE SCHEMA x`)
	tn, err := f.strategy.Provision(ctx, isolation.Tenant{ID: uuid.New(), Slug: evil, Strategy: isolation.Schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.strategy.Deprovision(context.Background(), tn) })
	if tn.Placement != schema.Name(tn.ID) {
		t.Errorf("placement %q", tn.Placement)
	}
	if n := pgtest.Count(t, f.owner, `SELECT count(*) FROM pg_namespace WHERE nspname = 'x'`); n != 1 {
		t.Error("schema x was dropped")
	}
	if n := pgtest.Count(t, f.owner, `
		SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%drop%' OR nspname LIKE 'a%')
		     + (SELECT count(*) FROM pg_roles WHERE rolname LIKE '%drop%')`); n != 0 {
		t.Errorf("%d schemas or roles are named from the slug", n)
	}
	err = f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
		var path string
		if err := tx.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&path); err != nil {
			return err
		}
		// The tenant's schema, then pg_temp: last, so that no temporary
		// table can shadow a tenant table.
		if want := schema.Name(tn.ID) + ", pg_temp"; path != want {
			t.Errorf("search_path %s, want %s", path, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A tenant whose recorded placement disagrees with its id is refused
// rather than bound to either schema.
func TestMismatchedPlacementFailsClosed(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	forged := f.tenants[0]
	forged.Placement = f.tenants[1].Placement
	if err := f.strategy.Run(ctx, forged, func(pgx.Tx) error { return nil }); err == nil {
		t.Error("a tenant bound with another tenant's placement")
	}
	if err := f.strategy.Run(ctx, isolation.Tenant{}, func(pgx.Tx) error { return nil }); !errors.Is(err, isolation.ErrNoTenant) {
		t.Errorf("Run with no tenant: %v", err)
	}
}
