package database_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
	"github.com/bulkheadhq/bulkhead/migrations"
)

func account(i int) map[string]any {
	return map[string]any{"provider": "aws", "external_id": fmt.Sprintf("%012d", i), "name": fmt.Sprintf("account %d", i)}
}

// A tenant gets a database of its own, cloned from the template at the
// migration head, owned by the owner, that only the serving role may
// connect to; its rows live there and nowhere else.
func TestProvisionGivesEachTenantItsDatabase(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	admin := e.adminConn(t, database.DefaultServer, "postgres")
	for _, tn := range []apitest.Tenant{a, b} {
		db := database.DBName(tn.ID)
		if tn.Isolation != isolation.Database || tn.Server != database.DefaultServer || tn.Placement != db {
			t.Fatalf("tenant %s recorded as %s on %q in %q, want database on %q in %q",
				tn.Slug, tn.Isolation, tn.Server, tn.Placement, database.DefaultServer, db)
		}
		if tn.Version != migrations.Tenant.Head() {
			t.Errorf("tenant %s is at version %d, want %d", tn.Slug, tn.Version, migrations.Tenant.Head())
		}
		var owner string
		var allowConn, publicConnect, publicTemp, appConnect, appTemp bool
		err := admin.QueryRow(context.Background(), `
			SELECT pg_get_userbyid(datdba), datallowconn,
			       has_database_privilege('public', oid, 'CONNECT'), has_database_privilege('public', oid, 'TEMPORARY'),
			       has_database_privilege($2, oid, 'CONNECT'), has_database_privilege($2, oid, 'TEMPORARY')
			FROM pg_database WHERE datname = $1`, db, isolation.AppRole,
		).Scan(&owner, &allowConn, &publicConnect, &publicTemp, &appConnect, &appTemp)
		if err != nil {
			t.Fatalf("database of %s: %v", tn.Slug, err)
		}
		if owner != isolation.OwnerRole || !allowConn || publicConnect || publicTemp || !appConnect || appTemp {
			t.Errorf("database %s: owner %s, allows connections %v, PUBLIC connect %v temp %v, serving role connect %v temp %v",
				db, owner, allowConn, publicConnect, publicTemp, appConnect, appTemp)
		}
		// Inside, the tenant tables keep their forced policy: two walls.
		in := e.adminConn(t, database.DefaultServer, db)
		if fs, err := verify.TenantTables(context.Background(), in, "public"); err != nil || len(fs) > 0 {
			t.Errorf("tenant tables of %s: %v %v", db, fs, err)
		}
	}
	var isTemplate, allowConn bool
	if err := admin.QueryRow(context.Background(), `SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1`,
		database.TemplateName()).Scan(&isTemplate, &allowConn); err != nil || !isTemplate || allowConn {
		t.Errorf("template %s: is template %v, allows connections %v (%v)", database.TemplateName(), isTemplate, allowConn, err)
	}

	created := e.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1)).Map(t)
	e.Must(t, 200, "GET", "/v1/accounts/"+created["id"].(string), a.Viewer, nil)
	e.Must(t, 404, "GET", "/v1/accounts/"+created["id"].(string), b.Viewer, nil)
	inA := e.adminConn(t, database.DefaultServer, database.DBName(a.ID))
	inB := e.adminConn(t, database.DefaultServer, database.DBName(b.ID))
	control := e.adminConn(t, database.DefaultServer, e.DB.Name)
	if n := pgtest.Count(t, inA, `SELECT count(*) FROM accounts`); n != 1 {
		t.Errorf("%s's database holds %d accounts, want 1", a.Slug, n)
	}
	if n := pgtest.Count(t, inB, `SELECT count(*) FROM accounts`) + pgtest.Count(t, control, `SELECT count(*) FROM accounts`); n != 0 {
		t.Errorf("%d accounts outside %s's database", n, a.Slug)
	}
}

// The serving role reaches tenant databases only: the strategy refuses a
// placement that is not the tenant's own database, the template refuses
// connections, and a role with no more than PUBLIC's privileges cannot
// connect to a tenant database.
func TestServingRoleReachesOnlyTenantDatabases(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	ctx := context.Background()
	s := e.strategy(t)
	for _, placement := range []string{e.DB.Name, "postgres", database.TemplateName(), b.Placement} {
		forged := a.Isolated()
		forged.Placement = placement
		ran := false
		err := s.Run(ctx, forged, func(pgx.Tx) error { ran = true; return nil })
		if err == nil || ran {
			t.Errorf("Run with %s's id placed in %s: ran %v, err %v", a.Slug, placement, ran, err)
		}
	}
	unknown := a.Isolated()
	unknown.Server = "elsewhere"
	if err := s.Run(ctx, unknown, func(pgx.Tx) error { return nil }); err == nil {
		t.Error("Run on a server that is not configured succeeded")
	}

	appURL := e.DB.AppURL
	if conn, err := pgx.Connect(ctx, withDatabase(t, appURL, database.TemplateName())); err == nil {
		conn.Close(ctx)
		t.Error("the serving role connected to the template")
	}
	if conn, err := pgx.Connect(ctx, withDatabase(t, appURL, a.Placement)); err != nil {
		t.Errorf("the serving role cannot connect to a tenant database: %v", err)
	} else {
		conn.Close(ctx)
	}

	// A role that holds only what PUBLIC holds.
	admin := e.adminConn(t, database.DefaultServer, "postgres")
	outsider := "outsider_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	exec(t, admin, `CREATE ROLE `+outsider+` LOGIN`)
	t.Cleanup(func() { admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+outsider) })
	for _, db := range []string{a.Placement, b.Placement, database.TemplateName()} {
		conn, err := pgx.Connect(ctx, withDatabase(t, withUser(t, e.admin[database.DefaultServer], outsider), db))
		if err == nil {
			conn.Close(ctx)
			t.Errorf("a role with PUBLIC's privileges connected to %s", db)
			continue
		}
		if !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "not currently accepting connections") {
			t.Errorf("connecting to %s as %s: %v, want a refusal", db, outsider, err)
		}
	}
}

// Inside a tenant's database the policy still holds: rows of another
// tenant id planted there are invisible to the tenant, and a connection
// bound to no tenant sees no row.
func TestPolicyHoldsInsideTheDatabase(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a := e.Tenant(t, "tenant-a")
	e.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1))
	in := e.adminConn(t, database.DefaultServer, a.Placement)
	planted := uuid.New()
	exec(t, in, `INSERT INTO accounts (tenant_id, id, provider, external_id, name) VALUES ($1, $1, 'aws', 'planted', 'planted')`, planted)
	ctx := context.Background()
	err := e.strategy(t).Run(ctx, a.Isolated(), func(tx pgx.Tx) error {
		if n := pgtest.Count(t, tx, `SELECT count(*) FROM accounts`); n != 1 {
			t.Errorf("%s sees %d accounts in its database, want its 1", a.Slug, n)
		}
		if tag, err := tx.Exec(ctx, `UPDATE accounts SET name = 'x' WHERE id = $1`, planted); err != nil || tag.RowsAffected() != 0 {
			t.Errorf("%s changed %d planted rows (%v)", a.Slug, tag.RowsAffected(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	list := e.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)
	if strings.Contains(string(list.Body), planted.String()) {
		t.Error("the API lists a planted row of another tenant id")
	}
	conn, err := pgx.Connect(ctx, withDatabase(t, e.DB.AppURL, a.Placement))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if n := pgtest.Count(t, conn, `SELECT count(*) FROM accounts`); n != 0 {
		t.Errorf("an unbound connection to %s's database sees %d rows", a.Slug, n)
	}
}

// Deleting a tenant drops its database, even while a transaction of it is
// open, and closes its pool: nothing of it is left on the server or in the
// process.
func TestDeleteLeavesNoDatabaseAndNoPool(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	e.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1))
	e.Must(t, 201, "POST", "/v1/accounts", b.Editor, account(1))
	s := e.strategy(t)
	if !s.HasPool(a.Isolated()) {
		t.Fatal("no pool for a tenant just served")
	}
	// A transaction of a stays open while a is deleted.
	ctx := context.Background()
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, a.Isolated(), func(tx pgx.Tx) error {
			close(inTx)
			<-release
			_, err := tx.Exec(ctx, `SELECT 1`)
			return err
		})
	}()
	select { // a Run that never began its transaction fails the test, not hangs it
	case <-inTx:
	case err := <-done:
		t.Fatalf("Run ended before its transaction began: %v", err)
	case <-time.After(await.Deadline):
		t.Fatal("Run never began its transaction")
	}
	deleted := make(chan struct{})
	go func() {
		defer close(deleted)
		e.Must(t, 204, "DELETE", "/admin/v1/tenants/"+a.Slug, apitest.AdminToken, nil)
	}()
	select {
	case <-deleted:
	case <-time.After(30 * time.Second):
		t.Fatal("delete hangs on an open transaction")
	}
	close(release)
	if err := await.Recv(t, done, "the deleted tenant's transaction to end"); err == nil {
		t.Error("the transaction of a deleted tenant committed")
	}
	admin := e.adminConn(t, database.DefaultServer, "postgres")
	if n := pgtest.Count(t, admin, `SELECT count(*) FROM pg_database WHERE datname = $1`, a.Placement); n != 0 {
		t.Errorf("the database of a deleted tenant is still there")
	}
	if n := pgtest.Count(t, admin, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, a.Placement); n != 0 {
		t.Errorf("%d sessions of a deleted tenant's database remain", n)
	}
	if s.HasPool(a.Isolated()) {
		t.Error("the pool of a deleted tenant is still open")
	}
	e.Must(t, 401, "GET", "/v1/accounts", a.Editor, nil)
	e.Must(t, 200, "GET", "/v1/accounts", b.Editor, nil)
	// Deleting what is gone already is not an error.
	if err := s.Deprovision(ctx, a.Isolated()); err != nil {
		t.Errorf("deprovision twice: %v", err)
	}
}

// A request that cannot get a connection within the acquire timeout is
// answered 503 with Retry-After, never a 500 and never a hang.
//
// Waiting for the budget is back-pressure, not an outage: the server is not
// taken for down, so the next request is served at once — also when the
// acquire timeout is as long as a connection attempt's own.
func TestSpentBudgetAnswers503(t *testing.T) {
	t.Parallel()
	for _, wait := range []string{"200ms", "2s"} {
		t.Run(wait, func(t *testing.T) {
			t.Parallel()
			spentBudgetAnswers503(t, wait)
		})
	}
}

func spentBudgetAnswers503(t *testing.T, acquireTimeout string) {
	e := start(t, nil, withBudget(1, acquireTimeout)...)
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	s := e.strategy(t)
	ctx := context.Background()
	// Tenant a's pool first gets its connection, however long a busy
	// machine takes to start a backend: the short acquire timeout is for
	// the requests below, not for this dial.
	for deadline := time.Now().Add(time.Minute); ; {
		err := s.Run(ctx, a.Isolated(), func(pgx.Tx) error { return nil })
		if err == nil {
			break
		}
		if !isUnavailable(err) || time.Now().After(deadline) {
			t.Fatalf("tenant a never got a connection: %v", err)
		}
	}
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		// With a short acquire timeout on a loaded machine, a's first
		// connection may take longer than the timeout: back-pressure,
		// retried for a bounded time, until a holds the budget.
		deadline := time.Now().Add(30 * time.Second)
		entered := false
		for {
			err := s.Run(ctx, a.Isolated(), func(pgx.Tx) error {
				entered = true
				close(inTx)
				<-release
				return nil
			})
			if !entered && errors.Is(err, isolation.ErrUnavailable) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			done <- err
			return
		}
	}()
	select { // a Run that never got its connection fails the test, not hangs it
	case <-inTx:
	case err := <-done:
		t.Fatalf("Run ended before its transaction began: %v (stats %+v)", err, s.Stats())
	case <-time.After(time.Minute):
		t.Fatal("Run never began its transaction")
	}
	for _, tn := range []apitest.Tenant{a, b} { // a's own pool is full too
		begin := time.Now()
		r := e.Must(t, 503, "GET", "/v1/accounts", tn.Viewer, nil)
		if r.Header.Get("Retry-After") == "" || strings.Contains(string(r.Body), "pool") {
			t.Errorf("503 for %s: %v %s", tn.Slug, r.Header, r.Body)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("the 503 took %s", took)
		}
	}
	err := s.Run(ctx, b.Isolated(), func(pgx.Tx) error { return nil })
	if !isUnavailable(err) {
		t.Errorf("Run with the budget spent: %v, want ErrUnavailable", err)
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tenant a's transaction did not end within 30s of its release")
	}
	// The slot goes to whoever needs it next: b, through a's idle
	// connection. With a short acquire timeout on a loaded machine one
	// attempt may still time out (back-pressure, answered 503): what must
	// not happen is b never being served.
	for _, tn := range []apitest.Tenant{b, a} {
		servedEventually(t, e, tn)
	}
	if st := s.Stats(); st.HighWater > 1 || st.Open > 1 {
		t.Errorf("stats %+v: more than the budget of 1", st)
	}
}

// Tenant pools connect through a transaction-mode PgBouncer when
// database.pooler says one is in front.
func TestServesThroughPgBouncer(t *testing.T) {
	t.Parallel()
	e := start(t, nil, apitest.WithPgBouncer())
	a, b := e.Tenant(t, "tenant-a"), e.Tenant(t, "tenant-b")
	for i := range 5 {
		for _, tn := range []apitest.Tenant{a, b} {
			e.Must(t, 201, "POST", "/v1/accounts", tn.Editor, account(i))
		}
	}
	var list struct{ Items []map[string]any }
	e.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil).JSON(t, &list)
	if len(list.Items) != 5 {
		t.Errorf("%s lists %d accounts, want 5", a.Slug, len(list.Items))
	}
}

// The enterprise profile provisions tenants on the database strategy and
// serves the whole tenant API over them.
func TestEnterpriseProfileServesTheAPI(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_PROFILE", "enterprise"), dropTenantDatabases(nil))
	a, b := e.Tenant(t, "acme"), e.Tenant(t, "globex")
	if a.Isolation != isolation.Database || a.Placement != database.DBName(a.ID) {
		t.Fatalf("enterprise tenant provisioned as %s in %q", a.Isolation, a.Placement)
	}
	acct := e.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1)).Map(t)
	id := acct["id"].(string)
	e.Must(t, 200, "PATCH", "/v1/accounts/"+id, a.Editor, map[string]any{"name": "renamed"})
	e.Must(t, 201, "POST", "/v1/costs", a.Editor, []map[string]any{
		{"account_id": id, "service": "EC2", "usage_date": "2025-01-02", "amount": "1.25", "currency": "USD"},
		{"account_id": id, "service": "S3", "usage_date": "2025-01-03", "amount": 2, "currency": "USD"},
	})
	e.Must(t, 201, "POST", "/v1/costs", a.Editor, "account_id,service,usage_date,amount,currency\n"+id+",EC2,2025-01-04,0.75,USD\n",
		"Content-Type", "text/csv")
	var costs struct{ Items []map[string]any }
	e.Must(t, 200, "GET", "/v1/costs?account_id="+id, a.Viewer, nil).JSON(t, &costs)
	if len(costs.Items) != 3 {
		t.Errorf("%d cost line items, want 3", len(costs.Items))
	}
	var summary struct{ Items []map[string]any }
	e.Must(t, 200, "GET", "/v1/costs/summary?from=2025-01-01&to=2025-01-31&group_by=service", a.Viewer, nil).JSON(t, &summary)
	if len(summary.Items) != 2 {
		t.Errorf("summary by service: %v", summary.Items)
	}
	budget := e.Must(t, 201, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "all", "amount": 100, "currency": "USD", "period": "monthly"}).Map(t)
	e.Must(t, 200, "GET", "/v1/budgets/"+budget["id"].(string), a.Viewer, nil)
	e.Must(t, 200, "GET", "/v1/budgets", a.Viewer, nil)
	// The other tenant sees none of it.
	e.Must(t, 404, "GET", "/v1/accounts/"+id, b.Viewer, nil)
	e.Must(t, 404, "GET", "/v1/budgets/"+budget["id"].(string), b.Viewer, nil)
	e.Must(t, 200, "GET", "/v1/costs", b.Viewer, nil).JSON(t, &costs)
	if len(costs.Items) != 0 {
		t.Errorf("%s sees %d of %s's cost line items", b.Slug, len(costs.Items), a.Slug)
	}
	e.Must(t, 409, "DELETE", "/v1/accounts/"+id, a.Editor, nil) // its cost items still point at it
}

// When a tenant's tables change under the statements its pool cached (a
// migration ran while it served), the transaction that finds out fails
// with isolation.ErrStalePlan and the pool is started afresh: the
// registry runs retryable work (every read of the API) once more, and it
// is served; other work is ErrUnavailable (503 with Retry-After), and the
// next attempt is served.
func TestChangedTablesUnderCachedStatements(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a := e.Tenant(t, "tenant-a")
	e.Must(t, 201, "POST", "/v1/accounts", a.Editor, account(1))
	e.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil) // prepared and cached
	admin := e.adminConn(t, database.DefaultServer, a.Placement)
	exec(t, admin, `ALTER TABLE accounts ALTER COLUMN name TYPE varchar(300)`)
	// The pool's one connection, used by each request in turn, holds the
	// stale statement.
	e.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil)

	ctx := context.Background()
	name := func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT name FROM accounts WHERE tenant_id = $1 LIMIT 1`, a.ID).Scan(new(string))
	}
	if err := e.Registry.Run(ctx, a.Isolated(), name, isolation.Retryable()); err != nil {
		t.Fatal(err) // prepared and cached
	}
	exec(t, admin, `ALTER TABLE accounts ALTER COLUMN name TYPE varchar(400)`)
	err := e.Registry.Run(ctx, a.Isolated(), name)
	if !errors.Is(err, isolation.ErrUnavailable) || !errors.Is(err, isolation.ErrStalePlan) {
		t.Fatalf("work that is not retryable: got %v, want ErrUnavailable and ErrStalePlan", err)
	}
	if err := e.Registry.Run(ctx, a.Isolated(), name); err != nil {
		t.Fatalf("the next attempt: %v", err)
	}
}

// servedEventually fails t unless tn's GET /v1/accounts is answered 200
// within 30 s; a 503 with Retry-After in between is back-pressure and is
// retried, any other answer fails at once.
func servedEventually(t *testing.T, e *env, tn apitest.Tenant) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, retry, err := get(e, "/v1/accounts", tn.Viewer)
		switch {
		case err != nil:
			t.Fatalf("GET /v1/accounts for %s: %v", tn.Slug, err)
		case status == 200:
			return
		case status != 503 || retry == "":
			t.Fatalf("GET /v1/accounts for %s: %d (Retry-After %q), want 200 or 503 with Retry-After", tn.Slug, status, retry)
		case time.Now().After(deadline):
			t.Fatalf("GET /v1/accounts for %s: still 503 after 30s with the budget free", tn.Slug)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The fence a tenant database's every transaction begins with reads the
// database's mark by index: its query, planned once a session, reads
// pg_database and pg_shdescription by their indexes, never by scanning
// them whole (which it did, planned freely, on every transaction: the
// catalogs are small, and their scans cost more than the read they
// guarded).
func TestFenceReadsCatalogsByIndex(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	a := e.Tenant(t, "tenant-a")
	fence, err := isolation.FenceStep(isolation.Tenant{ID: a.ID, Strategy: isolation.Database, Placement: database.DBName(a.ID)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := e.adminConn(t, database.DefaultServer, database.DBName(a.ID)).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// This transaction's own scans so far (pending statistics: read live).
	scans := func() (seq, idx int64) {
		t.Helper()
		if err := tx.QueryRow(ctx, `SELECT sum(seq_scan), sum(idx_scan) FROM pg_stat_xact_sys_tables
			WHERE relid IN ('pg_catalog.pg_database'::regclass, 'pg_catalog.pg_shdescription'::regclass)`).Scan(&seq, &idx); err != nil {
			t.Fatal(err)
		}
		return seq, idx
	}
	seq0, idx0 := scans()
	const calls = 3
	for range calls {
		if _, err := tx.Exec(ctx, fence.SQL); err != nil {
			t.Fatalf("%s: %v", fence.SQL, err)
		}
	}
	seq1, idx1 := scans()
	if seq1 != seq0 {
		t.Errorf("%d fence calls scanned pg_database or pg_shdescription whole %d times", calls, seq1-seq0)
	}
	if idx1-idx0 < calls {
		t.Errorf("%d fence calls read pg_database and pg_shdescription by index %d times, want at least %d", calls, idx1-idx0, calls)
	}
}
