package system_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/app/system"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	db       *pgtest.DB
	cfg      *config.Config
	control  *control.Service
	strategy *isolation.Registry
	esc      *system.Escalator
}

func setup(t *testing.T) fixture {
	t.Helper()
	db := pgtest.New(t)
	cfg := pgtest.Config(db)
	pools, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pools.Close)
	router := isolation.RegistryOf(rls.New(pools.App, pools.Owner))
	ctl := control.New(pools, router, cfg, pgtest.Logger())
	if _, err := ctl.Migrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return fixture{db: db, cfg: cfg, control: ctl, strategy: router, esc: system.New(cfg, ctl)}
}

func TestUsageIsAuditedAndCounts(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	rows := map[string]int{"acme": 3, "globex": 1, "empty": 0}
	for slug, n := range rows {
		tn, err := f.control.CreateTenant(ctx, slug, "")
		if err != nil {
			t.Fatal(err)
		}
		err = f.strategy.Run(ctx, tn.Isolated(), func(tx pgx.Tx) error {
			for i := range n {
				if _, err := tx.Exec(ctx, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $2, 'aws', $3, 'x')`,
					tn.ID, uuid.New(), strings.Repeat("9", i+1)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	report, err := f.esc.Usage(ctx, "monthly capacity review", f.strategy, f.strategy)
	if err != nil {
		t.Fatal(err)
	}
	if len(report) != 3 {
		t.Fatalf("report: %+v", report)
	}
	for _, u := range report {
		if u.Tables["accounts"].Rows != int64(rows[u.Tenant]) || (rows[u.Tenant] > 0) != (u.Bytes > 0) {
			t.Errorf("%s: %+v, want %d account rows", u.Tenant, u, rows[u.Tenant])
		}
	}
	log, err := f.control.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := log[len(log)-1]
	if last.Action != system.ActionUsage || last.Reason != "monthly capacity review" || len(last.Tenants) != 3 {
		t.Errorf("last audit row %+v", last)
	}
}

// If the audit row cannot be written, the escalation does not run.
func TestNoAuditNoEscalation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	ran := false
	work := func(pgx.Tx) error { ran = true; return nil }
	if err := f.esc.Run(ctx, "test", " ", nil, work); !errors.Is(err, system.ErrReasonRequired) || ran {
		t.Fatalf("no reason: %v (ran %v)", err, ran)
	}
	f.db.Exec(t, `REVOKE INSERT ON bulkhead.audit_log FROM bulkhead_owner`)
	if err := f.esc.Run(ctx, "test", "because", nil, work); err == nil || ran {
		t.Fatalf("audit write refused: %v (ran %v)", err, ran)
	}
	f.db.Exec(t, `GRANT INSERT ON bulkhead.audit_log TO bulkhead_owner`)
	err := f.esc.Run(ctx, "test", "because", nil, func(tx pgx.Tx) error {
		ran = true
		var role string
		if err := tx.QueryRow(ctx, `SELECT current_user`).Scan(&role); err != nil {
			return err
		}
		if role != isolation.SystemRole {
			t.Errorf("escalated work ran as %s", role)
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("audited escalation: %v (ran %v)", err, ran)
	}
	off := *f.cfg
	off.System.Enabled = false
	if err := system.New(&off, f.control).Run(ctx, "test", "because", nil, work); !config.IsConfigError(err) {
		t.Fatalf("system role off: %v", err)
	}
}

// No request-serving code path can reach the system role.
func TestServingCannotReachTheSystemRole(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	ctx := context.Background()
	// Inside a tenant transaction of the serving pool.
	err := env.Strategy.Run(ctx, a.Isolated(), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL ROLE `+isolation.SystemRole)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("SET ROLE %s as the serving role: %v, want permission denied", isolation.SystemRole, err)
	}
	var member bool
	if err := env.Pools.App.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, isolation.SystemRole).Scan(&member); err != nil || member {
		t.Errorf("serving role is a member of %s: %v, %v", isolation.SystemRole, member, err)
	}
	// The server's fx graph has no escalator to give.
	var esc *system.Escalator
	in := config.Input{Env: []string{"BULKHEAD_DATABASE_URL=" + env.DB.AppURL, "BULKHEAD_SYSTEM__ENABLED=true"}}
	// Validated, not built: a built graph would open pools that no stop
	// closes.
	if err := fx.ValidateApp(app.Base(in), app.Server(), fx.Populate(&esc), fx.NopLogger); err == nil {
		t.Error("the serve app graph can build a system escalator")
	}
	// And no package that serves requests imports this one.
	out, err := exec.Command("go", "list", "-deps", "../httpapi", "../finops", "../../isolation/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "bulkhead/app/system") {
		t.Error("a request-serving package depends on app/system")
	}
}
