package control_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// setup returns the control plane over a fresh database.
func setup(t *testing.T) (*control.Service, *pgtest.DB, *postgres.Pools) {
	t.Helper()
	db := pgtest.New(t)
	cfg := pgtest.Config(db)
	pools, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)
	svc := control.New(pools, isolation.RegistryOf(rls.New(pools.App, pools.Owner)), cfg, pgtest.Logger())
	return svc, db, pools
}

func TestLifecycleIsAuditedInAChain(t *testing.T) {
	t.Parallel()
	svc, _, _ := setup(t)
	ctx := control.WithActor(context.Background(), "test")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := svc.CreateTenant(ctx, "acme", "")
	must(err)
	_, err = svc.CreateTenant(ctx, "globex", "")
	must(err)
	k, err := svc.CreateKey(ctx, "acme", auth.Viewer)
	must(err)
	_, err = svc.SetStatus(ctx, "acme", control.StatusSuspended)
	must(err)
	_, err = svc.SetStatus(ctx, "acme", control.StatusActive)
	must(err)
	must(svc.GrantKey(ctx, k.ID, "globex"))
	must(svc.UngrantKey(ctx, k.ID, "globex"))
	must(svc.RevokeKey(ctx, k.ID))
	_, err = svc.DeleteTenant(ctx, "globex")
	must(err)

	log, err := svc.AuditLog(ctx, 0, 0)
	must(err)
	var actions []string
	for _, e := range log {
		actions = append(actions, e.Action)
		if e.Actor != "test" {
			t.Errorf("row %d: actor %q", e.Seq, e.Actor)
		}
	}
	want := []string{
		control.ActionTenantCreate, control.ActionTenantCreate, control.ActionKeyCreate,
		control.ActionTenantSuspend, control.ActionTenantResume, control.ActionKeyGrant,
		control.ActionKeyUngrant, control.ActionKeyRevoke, control.ActionTenantDelete,
	}
	if !slices.Equal(actions, want) {
		t.Fatalf("audited %v, want %v", actions, want)
	}
	if n, err := svc.VerifyAudit(ctx); err != nil || n != int64(len(want)) {
		t.Fatalf("verify: %d rows, %v", n, err)
	}
}

func isPermissionDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// No role Bulkhead uses can change or remove audit rows.
func TestAuditLogIsAppendOnly(t *testing.T) {
	t.Parallel()
	svc, _, pools := setup(t)
	ctx := context.Background()
	if _, err := svc.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	for name, pool := range map[string]interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}{"owner": pools.Owner, "serving role": pools.App} {
		for _, sql := range []string{
			`UPDATE bulkhead.audit_log SET reason = 'rewritten'`,
			`DELETE FROM bulkhead.audit_log`,
			`TRUNCATE bulkhead.audit_log`,
		} {
			if _, err := pool.Exec(ctx, sql); !isPermissionDenied(err) {
				t.Errorf("%s: %s: got %v, want permission denied", name, sql, err)
			}
		}
	}
	if _, err := pools.App.Exec(ctx, `INSERT INTO bulkhead.audit_log VALUES (99, now(), 'x', 'x', '', '{}', '{}', '', '')`); !isPermissionDenied(err) {
		t.Errorf("serving role inserting audit rows: %v", err)
	}
	if n, err := svc.VerifyAudit(ctx); err != nil || n != 1 {
		t.Fatalf("verify: %d rows, %v", n, err)
	}
}

// Tampering with a row, as a superuser who gets past every guard, is found
// and the row named.
func TestTamperingIsFound(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, sql string
		seq       int64
	}{
		{"edited", `UPDATE bulkhead.audit_log SET reason = 'nothing to see' WHERE seq = 3`, 3},
		{"removed", `DELETE FROM bulkhead.audit_log WHERE seq = 2`, 2},
		{"rehashed without the chain", `UPDATE bulkhead.audit_log SET actor = 'mallory', hash = sha256(hash) WHERE seq = 4`, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, db, _ := setup(t)
			ctx := context.Background()
			for _, slug := range []string{"t-one", "t-two", "t-three", "t-four", "t-five"} {
				if _, err := svc.CreateTenant(ctx, slug, ""); err != nil {
					t.Fatal(err)
				}
			}
			db.Exec(t, `ALTER TABLE bulkhead.audit_log DISABLE TRIGGER USER`)
			db.Exec(t, tc.sql)
			n, err := svc.VerifyAudit(ctx)
			var broken *control.AuditBreak
			if !errors.As(err, &broken) {
				t.Fatalf("verify after tampering: %d rows, %v", n, err)
			}
			if broken.Seq != tc.seq || n != tc.seq-1 {
				t.Errorf("broken at %d after %d good rows, want %d", broken.Seq, n, tc.seq)
			}
		})
	}
}

func TestReadableTenants(t *testing.T) {
	t.Parallel()
	svc, _, _ := setup(t)
	ctx := context.Background()
	for _, slug := range []string{"parent", "sub-one", "sub-two"} {
		if _, err := svc.CreateTenant(ctx, slug, ""); err != nil {
			t.Fatal(err)
		}
	}
	k, err := svc.CreateKey(ctx, "parent", auth.Viewer)
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.Authenticate(ctx, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	readable := func(slugs ...string) error {
		_, err := svc.Readable(ctx, p, slugs)
		return err
	}
	if err := readable("parent"); err != nil {
		t.Errorf("own tenant: %v", err)
	}
	if err := readable("parent", "sub-one"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ungranted tenant: %v, want not found", err)
	}
	if err := readable("nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing tenant: %v, want not found", err)
	}
	if err := svc.GrantKey(ctx, k.ID, "sub-one"); err != nil {
		t.Fatal(err)
	}
	if err := readable("parent", "sub-one"); err != nil {
		t.Errorf("granted tenant: %v", err)
	}
	if err := readable("sub-two"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a grant of one tenant opened another: %v", err)
	}
	if _, err := svc.SetStatus(ctx, "sub-one", control.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if err := readable("sub-one"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("suspended granted tenant: %v, want not found", err)
	}
	if _, err := svc.SetStatus(ctx, "sub-one", control.StatusActive); err != nil {
		t.Fatal(err)
	}
	if err := svc.UngrantKey(ctx, k.ID, "sub-one"); err != nil {
		t.Fatal(err)
	}
	if err := readable("sub-one"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after ungrant: %v, want not found", err)
	}
	if err := svc.UngrantKey(ctx, k.ID, "sub-one"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ungranting twice: %v", err)
	}
}
