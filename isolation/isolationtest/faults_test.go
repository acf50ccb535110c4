package isolationtest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Faults the strategy decorator injects into the victim tenant's
// transactions, once the request's own work ran and before it commits
// (or, for afterCommit, once it committed).
const (
	none int32 = iota
	sleepInDB
	hang
	panicking
	afterCommit
)

// faulty injects the fault its mode names into every transaction of the
// tenant called victim; the other tenants' transactions run untouched.
type faulty struct {
	inner   isolation.Runner
	mode    atomic.Int32
	entered chan struct{} // receives once the fault is in place
}

func (f *faulty) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	mode := f.mode.Load()
	if t.Slug != "victim" || mode == none {
		return f.inner.Run(ctx, t, fn, opts...)
	}
	// The fault is statements of its own after fn's.
	err := f.inner.Run(isolation.NotOneRead(ctx), t, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		switch mode {
		case sleepInDB:
			f.entered <- struct{}{}
			_, err := tx.Exec(ctx, `SELECT pg_sleep(60)`)
			return err
		case hang:
			f.entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		case panicking:
			panic("injected fault")
		}
		return nil
	}, opts...)
	if err == nil && mode == afterCommit {
		f.entered <- struct{}{}
		<-ctx.Done() // the client is gone; the handler answers no one
	}
	return err
}

// faultEnv is a server whose victim tenant suffers the injected faults
// while a bystander tenant keeps working.
type faultEnv struct {
	env       *apitest.Env
	f         *faulty
	victim    apitest.Tenant
	bystander apitest.Tenant
}

func startFaulty(t *testing.T) *faultEnv {
	t.Helper()
	fe := &faultEnv{f: &faulty{entered: make(chan struct{}, 1)}}
	fe.env = apitest.Start(t, nil, apitest.WithStrategyDecorator(func(s isolation.Runner) isolation.Runner {
		fe.f.inner = s
		return fe.f
	}))
	fe.victim, fe.bystander = fe.env.Tenant(t, "victim"), fe.env.Tenant(t, "bystander")
	fe.env.Must(t, 201, "POST", "/v1/accounts", fe.bystander.Editor, account("bystander-0"))
	return fe
}

func account(ext string) map[string]any {
	return map[string]any{"provider": "aws", "external_id": ext, "name": ext}
}

// accountNames lists tn's accounts' external ids, through the API.
func (fe *faultEnv) accountNames(t *testing.T, tn apitest.Tenant) []string {
	t.Helper()
	var page struct {
		Items []struct {
			ExternalID string `json:"external_id"`
		}
	}
	fe.env.Must(t, 200, "GET", "/v1/accounts?limit=1000", tn.Viewer, nil).JSON(t, &page)
	var out []string
	for _, a := range page.Items {
		out = append(out, a.ExternalID)
	}
	return out
}

// send posts an account for the victim on a raw connection and returns it
// once the server is inside the fault; the caller drops or reads it.
func (fe *faultEnv) send(t *testing.T, ext string) net.Conn {
	t.Helper()
	u, _ := url.Parse(fe.env.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(account(ext))
	fmt.Fprintf(c, "POST /v1/accounts HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		u.Host, fe.victim.Editor, len(body), body)
	select {
	case <-fe.f.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the injected fault")
	}
	return c
}

// check is what every fault must leave true: no connection of the serving
// pool holds a tenant or an open transaction, no server session of the
// database is left in a transaction or still running the victim's
// statement, the bystander sees only its own accounts, and the victim can
// write and read again — all without restarting the server.
func (fe *faultEnv) check(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	fe.f.mode.Store(none)
	// The cancel of a running statement reaches PostgreSQL asynchronously:
	// wait for it, boundedly.
	admin := pgtest.Pool(t, fe.env.DB.AdminURL)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var stuck []string
		rows, err := admin.Query(ctx, `
			SELECT state || ': ' || query FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()
			  AND (state LIKE 'idle in transaction%' OR query LIKE '%pg_sleep%' AND state = 'active')`)
		if err != nil {
			t.Fatal(err)
		}
		if stuck, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if len(stuck) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server sessions left behind: %q", stuck)
		}
		time.Sleep(50 * time.Millisecond)
	}
	noTenantLeft(t, fe.env.Pools.App)
	if got := fe.accountNames(t, fe.bystander); len(got) != 1 || got[0] != "bystander-0" {
		t.Errorf("the bystander sees accounts %v, want its own [bystander-0]", got)
	}
	ext := fmt.Sprintf("after-%d", time.Now().UnixNano())
	fe.env.Must(t, 201, "POST", "/v1/accounts", fe.victim.Editor, account(ext))
	for _, name := range fe.accountNames(t, fe.victim) {
		if strings.HasPrefix(name, "bystander") {
			t.Errorf("the victim sees the bystander's account %s", name)
		}
	}
}

// noTenantLeft acquires every connection the pool holds and fails unless
// each is idle, outside a transaction, with no tenant bound.
func noTenantLeft(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	n := max(int(pool.Stat().TotalConns()), 1)
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if st := c.Conn().PgConn().TxStatus(); st != 'I' {
			t.Errorf("a pooled connection is in transaction status %q", st)
		}
		var setting string
		if err := c.QueryRow(ctx, `SELECT COALESCE(current_setting('`+isolation.Setting+`', true), '')`).Scan(&setting); err != nil {
			t.Fatal(err)
		}
		if setting != "" {
			t.Errorf("LEAK: a pooled connection still carries tenant %s", setting)
		}
	}
}

// bystanderTraffic keeps the bystander reading and writing until stop is
// closed, and fails t on any error or foreign row.
func (fe *faultEnv) bystanderTraffic(t *testing.T) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Go(func() {
		client := &http.Client{Timeout: 30 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			req, _ := http.NewRequest("GET", fe.env.URL+"/v1/accounts?limit=1000", nil)
			req.Header.Set("Authorization", "Bearer "+fe.bystander.Viewer)
			res, err := client.Do(req)
			if err == nil {
				var page struct {
					Items []struct {
						ExternalID string `json:"external_id"`
					}
				}
				err = json.NewDecoder(res.Body).Decode(&page)
				res.Body.Close()
				if err == nil && res.StatusCode != 200 {
					err = fmt.Errorf("GET /v1/accounts: %d", res.StatusCode)
				}
				for _, a := range page.Items {
					if !strings.HasPrefix(a.ExternalID, "bystander") {
						err = fmt.Errorf("LEAK: the bystander sees %s", a.ExternalID)
					}
				}
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
		}
	})
	return func() {
		close(done)
		await.Group(t, &wg, "the bystander's traffic to stop")
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

// A client that gives up while the victim's statement runs in PostgreSQL
// cancels it there; nothing of the request is written.
func TestFaultRequestCancelledMidTransaction(t *testing.T) {
	t.Parallel()
	fe := startFaulty(t)
	stop := fe.bystanderTraffic(t)
	fe.f.mode.Store(sleepInDB)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		body, _ := json.Marshal(account("cancelled"))
		req, _ := http.NewRequestWithContext(ctx, "POST", fe.env.URL+"/v1/accounts", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+fe.victim.Editor)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("answered %d", res.StatusCode)
		}
		errc <- err
	}()
	select {
	case <-fe.f.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the injected fault")
	}
	cancel()
	if err := await.Recv(t, errc, "the cancelled request"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled request: %v", err)
	}
	stop()
	fe.check(t)
	for _, name := range fe.accountNames(t, fe.victim) {
		if name == "cancelled" {
			t.Error("the cancelled request's account was written")
		}
	}
}

// A client that disconnects while its transaction is open leaves nothing
// written and nothing open.
func TestFaultClientDisconnectsMidTransaction(t *testing.T) {
	t.Parallel()
	fe := startFaulty(t)
	stop := fe.bystanderTraffic(t)
	fe.f.mode.Store(hang)
	fe.send(t, "dropped").Close()
	stop()
	fe.check(t)
	for _, name := range fe.accountNames(t, fe.victim) {
		if name == "dropped" {
			t.Error("the dropped request's account was written")
		}
	}
}

// A client that disconnects after the commit, before its answer: the
// write is there, whole — the server's answer is what was lost.
func TestFaultClientDisconnectsAfterCommit(t *testing.T) {
	t.Parallel()
	fe := startFaulty(t)
	fe.f.mode.Store(afterCommit)
	fe.send(t, "committed").Close()
	fe.check(t)
	found := false
	for _, name := range fe.accountNames(t, fe.victim) {
		found = found || name == "committed"
	}
	if !found {
		t.Error("a committed write is missing")
	}
}

// A handler that panics inside the victim's transaction answers 500
// without detail; the transaction is rolled back and the server serves on.
func TestFaultHandlerPanicsMidTransaction(t *testing.T) {
	t.Parallel()
	fe := startFaulty(t)
	stop := fe.bystanderTraffic(t)
	fe.f.mode.Store(panicking)
	r := fe.env.Must(t, 500, "POST", "/v1/accounts", fe.victim.Editor, account("panicked"))
	if strings.Contains(string(r.Body), "injected") || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("the panic's answer: %s %s", r.Header.Get("Content-Type"), r.Body)
	}
	stop()
	fe.check(t)
	for _, name := range fe.accountNames(t, fe.victim) {
		if name == "panicked" {
			t.Error("the panicking request's account was written")
		}
	}
	logged := false
	for _, l := range fe.env.Logs.Lines() {
		logged = logged || l["msg"] == "handler panic"
	}
	if !logged {
		t.Error("the panic was not logged")
	}
}

// PostgreSQL crashes (an immediate stop: no checkpoint, recovery at start)
// and comes back while two tenants write and read: every acknowledged
// write survives, no answer leaks a row of the other tenant or a database
// error, and the server — never restarted — serves again once PostgreSQL
// does. It runs on a cluster of its own: the shared one is never
// restarted.
func TestFaultPostgresRestartUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{
		Dir: filepath.Join(t.TempDir(), "pg"),
		// Acknowledged means flushed: what production runs with.
		Settings: map[string]string{"synchronous_commit": "on", "max_connections": "100"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Error(err)
		}
	})
	db := dedicatedDB(t, ctx, cluster)
	env := apitest.Start(t, db)
	tenants := []apitest.Tenant{env.Tenant(t, "tenant-a"), env.Tenant(t, "tenant-b")}

	var (
		mu       sync.Mutex
		acked    = map[string][]string{} // tenant slug -> external ids answered 201
		failures atomic.Int64
		errs     = make(chan error, 10)
	)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, tn := range tenants {
		for w := range 3 {
			wg.Go(func() {
				client := &http.Client{Timeout: 30 * time.Second}
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
					}
					ext := fmt.Sprintf("%s-%d-%d", tn.Slug, w, i)
					status, body, err := post(client, env.URL+"/v1/accounts", tn.Editor, account(ext))
					switch {
					case err != nil:
						report(fmt.Errorf("POST: %w", err))
						return
					case status == 201:
						mu.Lock()
						acked[tn.Slug] = append(acked[tn.Slug], ext)
						mu.Unlock()
					case status >= 500:
						failures.Add(1)
						if dbError.MatchString(problemDetail(body)) {
							report(fmt.Errorf("a database error reached the client: %s", body))
						}
					default:
						report(fmt.Errorf("POST %s: %d %s", ext, status, body))
						return
					}
				}
			})
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if r := env.Do(t, "GET", "/readyz", "", nil); r.Status != 503 {
		t.Errorf("/readyz while PostgreSQL is down: %s, want 503", r)
	}
	if err := cluster.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	// Recovery is eventual (broken pooled connections are found on use):
	// wait, boundedly, for a first success, then let the load run on.
	deadline := time.Now().Add(time.Minute)
	for env.Do(t, "GET", "/readyz", "", nil).Status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the server did not recover after PostgreSQL came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	before := len(acked["tenant-a"]) + len(acked["tenant-b"])
	mu.Unlock()
	time.Sleep(500 * time.Millisecond)
	close(done)
	await.Group(t, &wg, "the load to stop")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	after := len(acked["tenant-a"]) + len(acked["tenant-b"])
	mu.Unlock()
	if after <= before {
		t.Errorf("no write was acknowledged after PostgreSQL came back (%d before, %d after)", before, after)
	}
	t.Logf("%d writes acknowledged, %d answered 5xx during the outage", after, failures.Load())
	// Every acknowledged write is there, in its own tenant only.
	for _, tn := range tenants {
		// Every page: a fast machine acknowledges more than one page holds.
		have := map[string]bool{}
		for path := "/v1/accounts?limit=1000"; path != ""; {
			var page struct {
				Items []struct {
					ExternalID string `json:"external_id"`
				}
				NextCursor *string `json:"next_cursor"`
			}
			env.Must(t, 200, "GET", path, tn.Viewer, nil).JSON(t, &page)
			for _, a := range page.Items {
				if !strings.HasPrefix(a.ExternalID, tn.Slug+"-") {
					t.Errorf("LEAK: %s sees %s", tn.Slug, a.ExternalID)
				}
				have[a.ExternalID] = true
			}
			path = ""
			if page.NextCursor != nil {
				path = "/v1/accounts?limit=1000&cursor=" + url.QueryEscape(*page.NextCursor)
			}
		}
		for _, ext := range acked[tn.Slug] {
			if !have[ext] {
				t.Errorf("%s lost the acknowledged write %s", tn.Slug, ext)
			}
		}
	}
	noTenantLeft(t, env.Pools.App)
}

// problemDetail is the detail of a problem+json body, or the whole body
// when it is not one: the text a database error could leak into. (The
// random request_id can spell "pgx" by chance.)
func problemDetail(body string) string {
	var p struct {
		Detail *string `json:"detail"`
	}
	if json.Unmarshal([]byte(body), &p) != nil || p.Detail == nil {
		return body
	}
	return *p.Detail
}

// dbError matches what a database or driver error looks like in an answer.
var dbError = regexp.MustCompile(`SQLSTATE|dial tcp|127\.0\.0\.1|pgx|pgconn|connection refused`)

// dedicatedDB makes Bulkhead's roles and an empty database on cluster, as
// pgtest does on the shared server, for apitest.Start to migrate.
func dedicatedDB(t *testing.T, ctx context.Context, cluster *pgcluster.Cluster) *pgtest.DB {
	t.Helper()
	conn, err := pgx.Connect(ctx, cluster.URL("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := isolation.EnsureRoles(ctx, conn, true); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`ALTER ROLE ` + isolation.AppRole + ` PASSWORD '` + pgtest.AppPassword + `'`,
		`CREATE DATABASE faults`,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	app, _ := url.Parse(cluster.URL(isolation.AppRole, "faults"))
	app.User = url.UserPassword(isolation.AppRole, pgtest.AppPassword)
	return &pgtest.DB{Name: "faults", AdminURL: cluster.URL("postgres", "faults"), MigrateURL: cluster.URL("postgres", "faults"), AppURL: app.String()}
}

// post sends a JSON body and returns the status and body; err is only for
// a request that got no answer at all.
func post(client *http.Client, url, key string, body any) (int, string, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", url, strings.NewReader(string(b)))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	var sb strings.Builder
	_, err = bufio.NewReader(res.Body).WriteTo(&sb)
	return res.StatusCode, sb.String(), err
}
