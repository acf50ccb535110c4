package schema_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// migrateTo moves tenant tn's schema to version v of the tenant migrations,
// up or down, through goose; extra migrations (name: SQL) join the
// embedded ones first.
func migrateTo(t *testing.T, f *fixture, tn isolation.Tenant, v int64, extra map[string]string) {
	t.Helper()
	ctx := context.Background()
	fsys := fstest.MapFS{}
	err := fs.WalkDir(migrations.Tenant.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.Tenant.FS(), p)
		fsys[p] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, sql := range extra {
		fsys[name] = &fstest.MapFile{Data: []byte(sql)}
	}
	db := isolation.OwnerDB(f.owner.Config().ConnConfig, schema.Name(tn.ID))
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(migrations.Tenant.Table), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := p.GetDBVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v >= cur {
		_, err = p.UpTo(ctx, v)
	} else {
		_, err = p.DownTo(ctx, v)
	}
	if err != nil {
		t.Fatalf("migrate %s to %d: %v", tn.Slug, v, err)
	}
}

func version(t *testing.T, f *fixture, tn isolation.Tenant) int64 {
	t.Helper()
	v, err := isolation.TenantVersion(context.Background(), f.owner, schema.Name(tn.ID))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// While tenants sit at different versions of a table's shape, the stores
// keep serving both, interleaved on one connection: PostgreSQL refuses the
// statement pgx prepared for the other tenant's shape ("cached plan must
// not change result type"), and Run retries once on a fresh statement. The
// same sequence without the retry fails, so the retry is what serves. It
// does on a server answering in German too: the retry reads the SQLSTATE.
func TestTenantsAtDifferentVersionsKeepServing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		mode       pgx.QueryExecMode
		translated bool
	}{{pgx.QueryExecModeCacheStatement, false}, {pgx.QueryExecModeCacheDescribe, false}, {pgx.QueryExecModeCacheStatement, true}} {
		mode := c.mode
		name := mode.String()
		if c.translated {
			name += "/lc_messages=" + pgtest.Foreign
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t)
			if c.translated {
				db.Translated(t)
			}
			f := setupOn(t, db, options{app: func(c *pgxpool.Config) {
				c.MaxConns = 1
				c.ConnConfig.DefaultQueryExecMode = mode
			}})
			ctx := context.Background()
			a, b := f.tenants[0], f.tenants[1]
			head := migrations.Tenant.Head()
			migrateTo(t, f, b, head+1, map[string]string{
				fmt.Sprintf("%05d_wider_names.sql", head+1): `
-- +goose Up
ALTER TABLE accounts ALTER COLUMN name TYPE varchar(200);
-- +goose Down
ALTER TABLE accounts ALTER COLUMN name TYPE text;
`})
			if va, vb := version(t, f, a), version(t, f, b); va != head || vb != head+1 {
				t.Fatalf("versions %d and %d, want %d and %d", va, vb, head, head+1)
			}
			store := finops.New(isolation.RegistryOf(f.strategy))
			for round := range 3 {
				for _, tn := range []isolation.Tenant{a, b} {
					accounts, _, err := store.Accounts(ctx, tn, finops.Page{})
					if err != nil {
						t.Fatalf("round %d, %s: %v", round, tn.Slug, err)
					}
					if len(accounts) != rowsPer || accounts[0].Name != tn.Slug {
						t.Fatalf("round %d, %s: got %+v", round, tn.Slug, accounts)
					}
				}
			}
			if mode != pgx.QueryExecModeCacheStatement {
				return // described anew on every execution: nothing goes stale
			}
			var failed error
			for _, tn := range []isolation.Tenant{a, b} {
				opts, err := isolation.Bind(tn.ID, isolation.SetRole(schema.Name(tn.ID)), isolation.Statement("SET LOCAL search_path = "+ident(tn)))
				if err != nil {
					t.Fatal(err)
				}
				failed = pgx.BeginTxFunc(ctx, f.app, opts, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, tn.ID).Scan(new(string))
				})
			}
			if code(failed) != "0A000" {
				t.Errorf("without the retry, the second tenant's read: got %v, want a cached plan error (0A000)", failed)
			}
		})
	}
}

// bulkhead migrate's fan-out over schema tenants: with one tenant's schema
// broken, the others reach head and serve, the broken one is reported
// failed with its error, and the run fails; after the fix, a re-run
// migrates only that tenant and completes.
func TestMigrateFanOutPastABrokenSchema(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1}) // a tenant outside the control plane, untouched throughout
	ctx := context.Background()
	svc := newControl(t, f)
	var tenants []isolation.Tenant
	for _, slug := range []string{"alpha", "bravo", "charlie", "delta"} {
		ct, err := svc.CreateTenant(ctx, slug, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if !t.Failed() {
				if _, err := svc.DeleteTenant(context.Background(), slug); err != nil {
					t.Errorf("delete %s: %v", slug, err)
				}
			}
		})
		tenants = append(tenants, ct.Isolated())
	}
	// A new release: every tenant is behind, as the control plane records.
	for _, tn := range tenants {
		migrateTo(t, f, tn, 0, nil)
	}
	f.db.Exec(t, `UPDATE bulkhead.tenants SET version = 0`)
	broken := tenants[2]
	brokenSchema := ident(broken)
	f.db.Exec(t, `REVOKE CREATE ON SCHEMA `+brokenSchema+` FROM `+isolation.OwnerRole)

	var mu sync.Mutex
	var progress [][3]int
	record := func(done, total, failed int) {
		mu.Lock()
		defer mu.Unlock()
		progress = append(progress, [3]int{done, total, failed})
	}
	head := migrations.Tenant.Head()
	report, err := svc.Migrate(ctx, record)
	if !errors.Is(err, control.ErrMigrationFailed) {
		t.Fatalf("migrate with a broken schema: %v, want ErrMigrationFailed", err)
	}
	if report.Failed != 1 || len(report.Tenants) != 4 {
		t.Fatalf("report: %+v", report)
	}
	for _, m := range report.Tenants {
		switch {
		case m.Tenant == broken.Slug:
			if m.State != "failed" || !strings.Contains(m.Error, "permission denied") {
				t.Errorf("broken tenant reported %+v", m)
			}
		case m.State != "current" || m.Version != head:
			t.Errorf("tenant reported %+v, want current at %d", m, head)
		}
	}
	if last := progress[len(progress)-1]; last != [3]int{4, 4, 1} {
		t.Errorf("last progress %v, want 4 of 4 done, 1 failed", last)
	}
	store := finops.New(isolation.RegistryOf(f.strategy))
	for _, tn := range tenants {
		if tn == broken {
			continue
		}
		if v := version(t, f, tn); v != head {
			t.Errorf("%s's schema is at %d, want %d", tn.Slug, v, head)
		}
		// Re-created tables were granted again: the tenant serves.
		if _, err := store.CreateAccount(ctx, tn, finops.AccountInput{Provider: ptr("aws"), ExternalID: ptr("1"), Name: ptr("n")}); err != nil {
			t.Errorf("%s after migrating: %v", tn.Slug, err)
		}
	}
	status, err := svc.MigrateStatus(ctx)
	if err != nil || status.Failed != 1 {
		t.Fatalf("migrate status: %+v, %v", status, err)
	}

	// The fix, and a re-run that picks up the broken tenant only.
	before := migratedAt(t, f)
	f.db.Exec(t, `GRANT CREATE ON SCHEMA `+brokenSchema+` TO `+isolation.OwnerRole)
	progress = nil
	report, err = svc.Migrate(ctx, record)
	if err != nil || report.Failed != 0 {
		t.Fatalf("re-run after the fix: %+v, %v", report, err)
	}
	for _, m := range report.Tenants {
		if m.State != "current" || m.Version != head || m.Error != "" {
			t.Errorf("after the re-run: %+v", m)
		}
	}
	if fmt.Sprint(progress) != "[[1 1 0]]" {
		t.Errorf("re-run progress %v, want one tenant migrated", progress)
	}
	after := migratedAt(t, f)
	for slug, at := range before {
		if slug != broken.Slug && !after[slug].Equal(at) {
			t.Errorf("the re-run migrated %s again", slug)
		}
	}
	if v := version(t, f, broken); v != head {
		t.Errorf("the fixed schema is at %d, want %d", v, head)
	}
	if _, err := store.CreateAccount(ctx, broken, finops.AccountInput{Provider: ptr("aws"), ExternalID: ptr("1"), Name: ptr("n")}); err != nil {
		t.Errorf("%s after the re-run: %v", broken.Slug, err)
	}
	// The tenant outside the control plane kept its rows and version.
	outside := f.tenants[0]
	if v := version(t, f, outside); v != head {
		t.Errorf("the untouched tenant is at %d", v)
	}
}

func migratedAt(t *testing.T, f *fixture) map[string]time.Time {
	t.Helper()
	rows, err := f.owner.Query(context.Background(), `SELECT slug, migrated_at FROM bulkhead.tenants`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for rows.Next() {
		var slug string
		var at time.Time
		if err := rows.Scan(&slug, &at); err != nil {
			t.Fatal(err)
		}
		out[slug] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// Tenant migration 00003 (FOCUS, exact money) on a tenant holding rows of
// the version-2 shape, numeric(20,6) amounts: every amount reads back as it
// was, the new columns read NULL, and no table or index is rewritten (their
// files are the same), which is what makes it safe on large tables and
// across many tenants.
func TestExactMoneyMigrationRewritesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, options{tenants: 1})
	ctx := context.Background()
	tn := f.tenants[0]
	migrateTo(t, f, tn, 2, nil)
	// 00003's Down keeps amounts unconstrained (narrowing would round): put
	// back the shape version 2 had, as a tenant that never left it has.
	sch := ident(tn)
	// One statement a message: Citus passes a distributed table's ALTER
	// on to the workers as the message's whole text.
	for _, table := range []string{"cost_items", "budgets"} {
		if _, err := f.owner.Exec(ctx, `ALTER TABLE `+sch+`.`+table+` ALTER COLUMN amount TYPE numeric(20, 6)`); err != nil {
			t.Fatal(err)
		}
	}
	amounts := []string{"0.000001", "-5.000000", "99999999999999.999999", "12.345600", "-0.000001"}
	err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
		var account uuid.UUID
		if err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE tenant_id = $1 ORDER BY id LIMIT 1`, tn.ID).Scan(&account); err != nil {
			return err
		}
		for i, a := range amounts {
			if _, err := tx.Exec(ctx, `INSERT INTO cost_items (tenant_id, id, account_id, service, usage_date, amount, currency)
				VALUES ($1, $2, $3, 'EC2', '2024-09-01', $4::numeric, 'USD')`, tn.ID, uuid.New(), account, a); err != nil {
				return err
			}
			if i == 0 {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO budgets (tenant_id, id, name, amount, currency, period)
				VALUES ($1, $2, $3, abs($4::numeric), 'USD', 'monthly')`, tn.ID, uuid.New(), fmt.Sprint("b", i), a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	files := func() map[string]uint32 {
		t.Helper()
		rows, err := f.owner.Query(ctx, `
			SELECT c.relname, c.relfilenode FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind IN ('r', 'i', 't')`, schema.Name(tn.ID))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint32{}
		var (
			name string
			node uint32
		)
		if _, err := pgx.ForEachRow(rows, []any{&name, &node}, func() error { out[name] = node; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	read := func(query string) []string {
		t.Helper()
		var out []string
		err := f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, query, tn.ID)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	const costs = `SELECT amount::text FROM cost_items WHERE tenant_id = $1 ORDER BY amount`
	const budgets = `SELECT amount::text FROM budgets WHERE tenant_id = $1 ORDER BY amount`
	beforeFiles, beforeCosts, beforeBudgets := files(), read(costs), read(budgets)
	if len(beforeCosts) != len(amounts) || len(beforeBudgets) != len(amounts)-1 {
		t.Fatalf("before: %v %v", beforeCosts, beforeBudgets)
	}

	migrateTo(t, f, tn, migrations.Tenant.Head(), nil)
	afterFiles := files()
	for name, node := range beforeFiles {
		if afterFiles[name] != node {
			t.Errorf("%s was rewritten (file %d, now %d)", name, node, afterFiles[name])
		}
	}
	if got := read(costs); fmt.Sprint(got) != fmt.Sprint(beforeCosts) {
		t.Errorf("cost amounts %v, were %v", got, beforeCosts)
	}
	if got := read(budgets); fmt.Sprint(got) != fmt.Sprint(beforeBudgets) {
		t.Errorf("budget amounts %v, were %v", got, beforeBudgets)
	}
	if got := read(`SELECT coalesce(focus::text, 'NULL') || coalesce(billing_account_id, 'NULL') FROM cost_items WHERE tenant_id = $1`); len(got) != len(amounts) || got[0] != "NULLNULL" {
		t.Errorf("new columns of old rows: %v", got)
	}
	// And the column now takes what version 2 refused.
	err = f.strategy.Run(ctx, tn, func(tx pgx.Tx) error {
		var got string
		err := tx.QueryRow(ctx, `UPDATE cost_items SET amount = '0.00000080000'::numeric WHERE tenant_id = $1 AND amount = 0.000001 RETURNING amount::text`, tn.ID).Scan(&got)
		if err == nil && got != "0.00000080000" {
			err = fmt.Errorf("stored %s", got)
		}
		return err
	})
	if err != nil {
		t.Errorf("an eleven-decimal amount after the migration: %v", err)
	}
}
