package move_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type bundle struct {
	env *apitest.Env
	reg *isolation.Registry
	tn  apitest.Tenant
	// acked is every write the tenant acknowledged, external id → id,
	// over every load of the test.
	acked *sync.Map
}

// seq numbers the accounts loads create, so no two collide.
var seq atomic.Int64

// setup serves a tenant "acme" placed with strategy from, holding a few
// accounts.
func setup(t testing.TB, from string, opts ...apitest.Option) bundle {
	t.Helper()
	b := bundle{acked: &sync.Map{}}
	b.env = apitest.Start(t, nil, append([]apitest.Option{apitest.WithStrategy(from), apitest.WithFx(fx.Populate(&b.reg))}, opts...)...)
	b.tn = b.env.Tenant(t, "acme")
	for i := range 5 {
		b.env.Must(t, 201, "POST", "/v1/accounts", b.tn.Editor, map[string]any{
			"provider": "aws", "external_id": fmt.Sprintf("seed-%d", i), "name": "seed",
		})
	}
	return b
}

func (b bundle) mover(opts move.Options) *move.Mover {
	return move.New(b.env.Control, b.reg, slog.New(slog.DiscardHandler), opts)
}

// load is concurrent traffic through the HTTP API: writers creating
// accounts, readers listing them. It remembers every acknowledged write
// and every failed request.
type load struct {
	b      bundle
	mu     sync.Mutex
	acked  int
	failed []string
	reads  atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startLoad(t *testing.T, b bundle, writers, readers int) *load {
	return (&load{b: b}).start(writers, readers)
}

// restart starts l's traffic again after end, keeping what it
// acknowledged and forgetting what failed.
func (l *load) restart(writers, readers int) *load {
	l.failed = nil
	l.wg = sync.WaitGroup{}
	return l.start(writers, readers)
}

func (l *load) start(writers, readers int) *load {
	b := l.b
	l.stop = make(chan struct{})
	for w := range writers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ext := fmt.Sprintf("w%d-%d", w, seq.Add(1))
				status, body := l.do("POST", "/v1/accounts", b.tn.Editor, map[string]any{"provider": "gcp", "external_id": ext, "name": "load"})
				if status != 201 {
					l.fail(fmt.Sprintf("POST %s: %d %s", ext, status, body))
					continue
				}
				var a struct{ ID string }
				if err := json.Unmarshal(body, &a); err != nil {
					l.fail(err.Error())
					continue
				}
				b.acked.Store(ext, a.ID)
				l.mu.Lock()
				l.acked++
				l.mu.Unlock()
			}
		})
	}
	for range readers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				status, body := l.do("GET", "/v1/accounts?limit=20", b.tn.Viewer, nil)
				if status != 200 {
					l.fail(fmt.Sprintf("GET: %d %s", status, body))
					continue
				}
				l.reads.Add(1)
			}
		})
	}
	return l
}

func (l *load) fail(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed = append(l.failed, s)
}

func (l *load) do(method, path, key string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, l.b.env.URL+path, rd)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.b.env.Client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// end stops the load, waiting at most a minute.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("load did not stop within a minute")
	}
}

// written waits until the load has at least n more acknowledged writes
// than it has now, or fails after a minute.
func (l *load) written(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	want := l.acked + n
	l.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for {
		l.mu.Lock()
		got := l.acked
		l.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load acknowledged %d of %d writes within a minute", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listedAccount is an account as the API lists it.
type listedAccount struct{ ID, Name string }

// listAccounts lists every account of the tenant through the API, by
// external id, failing on a duplicate.
func listAccounts(t testing.TB, b bundle) map[string]listedAccount {
	t.Helper()
	out := map[string]listedAccount{}
	cursor := ""
	for {
		path := "/v1/accounts?limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Items []struct {
				ID         string `json:"id"`
				ExternalID string `json:"external_id"`
				Name       string `json:"name"`
			} `json:"items"`
			NextCursor *string `json:"next_cursor"`
		}
		b.env.Must(t, 200, "GET", path, b.tn.Viewer, nil).JSON(t, &page)
		for _, a := range page.Items {
			if _, dup := out[a.ExternalID]; dup {
				t.Errorf("account %s listed twice", a.ExternalID)
			}
			out[a.ExternalID] = listedAccount{ID: a.ID, Name: a.Name}
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			return out
		}
		cursor = *page.NextCursor
	}
}

// accounts lists every account of the tenant through the API: its id by
// external id, failing on a duplicate.
func accounts(t testing.TB, b bundle) map[string]string {
	t.Helper()
	out := map[string]string{}
	for ext, a := range listAccounts(t, b) {
		out[ext] = a.ID
	}
	return out
}

// check holds the tenant to the load: every acknowledged write present,
// nothing else but the seed, no request failed.
func (l *load) check(t *testing.T) {
	t.Helper()
	got := accounts(t, l.b)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.failed {
		t.Errorf("request failed during the move: %s", f)
	}
	acked := 0
	l.b.acked.Range(func(ext, id any) bool {
		acked++
		if got[ext.(string)] != id.(string) {
			t.Errorf("acknowledged account %s (%s) is missing after the move (found %q)", ext, id, got[ext.(string)])
		}
		return true
	})
	if want := acked + 5; len(got) != want {
		t.Errorf("%d accounts after the move, want %d (acknowledged %d + 5 seeded)", len(got), want, acked)
	}
}

func moveUnderLoad(t *testing.T, b bundle, to string) control.Move {
	t.Helper()
	l := startLoad(t, b, 3, 2)
	l.written(t, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mv, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: to})
	if err != nil {
		l.end(t)
		t.Fatalf("move to %s: %v", to, err)
	}
	l.written(t, 20) // writes go on, on the new placement
	l.end(t)
	l.check(t)
	if mv.Step != control.MoveDone || mv.To.Isolation != to || mv.PauseMS == nil {
		t.Fatalf("move to %s ended as %+v", to, mv)
	}
	tn, err := b.env.Control.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if tn.Isolation != to || tn.Placement != mv.To.Placement || tn.Server != mv.To.Server {
		t.Fatalf("after the move to %s the tenant is recorded at %s/%s/%s", to, tn.Isolation, tn.Server, tn.Placement)
	}
	sourceGone(t, b, mv)
	return mv
}

// sourceGone checks that nothing of the tenant is left at the move's
// source.
func sourceGone(t *testing.T, b bundle, mv control.Move) {
	t.Helper()
	ctx := context.Background()
	var n int
	switch mv.From.Isolation {
	case isolation.RLS:
		err := b.env.Pools.Owner.QueryRow(ctx, `SELECT count(*) FROM public.accounts WHERE tenant_id = $1`, mv.TenantID).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
	case isolation.Schema:
		if err := b.env.Pools.Owner.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, mv.From.Placement).Scan(&n); err != nil {
			t.Fatal(err)
		}
	case isolation.Database:
		if err := b.env.Pools.Owner.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, mv.From.Placement).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if n != 0 {
		t.Errorf("the source %s/%s still holds the tenant (%d)", mv.From.Isolation, mv.From.Placement, n)
	}
}

// TestMoveUnderLoad moves a tenant round every strategy, one way and then
// the other, while it takes writes and reads through the API; every
// acknowledged write must be there after each move, exactly once, and no
// request may fail.
func TestMoveUnderLoad(t *testing.T) {
	t.Parallel()
	for _, path := range [][]string{
		{isolation.RLS, isolation.Schema, isolation.Database, isolation.RLS},
		{isolation.RLS, isolation.Database, isolation.Schema, isolation.RLS},
	} {
		t.Run(fmt.Sprint(path), func(t *testing.T) {
			t.Parallel()
			b := setup(t, path[0])
			for _, to := range path[1:] {
				moveUnderLoad(t, b, to)
			}
			// The keys made before the first move still work.
			b.env.Must(t, 200, "GET", "/v1/me", b.tn.Editor, nil)
		})
	}
}

// TestMoveInterrupted stops the mover after each step, checks that the
// tenant still serves every write from one placement, then resumes the
// move, or rolls it back.
func TestMoveInterrupted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ from, to, step string }{
		{isolation.RLS, isolation.Database, control.MoveStarted},
		{isolation.RLS, isolation.Database, control.MoveProvisioned},
		{isolation.RLS, isolation.Database, control.MoveCopied},
		{isolation.RLS, isolation.Schema, control.MoveSwitched},
		{isolation.Database, isolation.Schema, "closed"},
		{isolation.Database, isolation.RLS, control.MoveSwitched},
	} {
		for _, then := range []string{"resume", "abort"} {
			t.Run(c.from+"-"+c.to+"-"+c.step+"-"+then, func(t *testing.T) {
				t.Parallel()
				b := setup(t, c.from)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				killed := errors.New("mover killed")
				l := startLoad(t, b, 2, 1)
				l.written(t, 10)
				_, err := b.mover(move.Options{AfterStep: func(step string) error {
					if step == c.step {
						return killed
					}
					return nil
				}}).Move(ctx, "acme", control.Placement{Isolation: c.to})
				if !errors.Is(err, killed) {
					l.end(t)
					t.Fatalf("move: %v, want the kill at %s", err, c.step)
				}
				open, err := b.env.Control.OpenMove(ctx, "acme")
				if err != nil {
					l.end(t)
					t.Fatalf("the interrupted move is not open: %v", err)
				}
				if open.Error == "" {
					t.Errorf("the interrupted move records no error")
				}
				if c.step == "closed" {
					// Closed, not switched: requests are refused (and
					// answered 503), not lost, until the move resumes.
					l.end(t)
					l.restart(1, 0)
				} else {
					l.written(t, 10) // still serving from one placement
				}
				switch then {
				case "resume":
					mv, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: c.to})
					if err != nil {
						l.end(t)
						t.Fatalf("resume: %v", err)
					}
					if mv.ID != open.ID || mv.Step != control.MoveDone {
						t.Errorf("resume ended as %+v, want move %s done", mv, open.ID)
					}
					l.written(t, 10)
					l.end(t)
					sourceGone(t, b, mv)
				case "abort":
					mv, err := b.mover(move.Options{}).Abort(ctx, "acme")
					if c.step == control.MoveSwitched {
						if err == nil {
							t.Fatalf("abort after the switch succeeded: %+v", mv)
						}
						if _, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: c.to}); err != nil {
							t.Fatalf("finish after a refused abort: %v", err)
						}
					} else if err != nil {
						l.end(t)
						t.Fatalf("abort: %v", err)
					}
					l.written(t, 10)
					l.end(t)
				}
				if c.step == "closed" {
					// The requests refused while closed are not
					// acknowledged; what was acknowledged is there.
					l.mu.Lock()
					l.failed = nil
					l.mu.Unlock()
				}
				l.check(t)
			})
		}
	}
}

// TestMoveAdminAPI moves a tenant through POST /admin/v1/tenants/{slug}/move
// and follows it with GET until it is done; the errors are problems.
func TestMoveAdminAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.RLS)
	admin := apitest.AdminToken
	for _, c := range []struct {
		slug   string
		body   any
		status int
	}{
		{"nobody", map[string]any{"to": "schema"}, 404},
		{"acme", map[string]any{"to": "rls"}, 409},
		{"acme", map[string]any{"to": "citus"}, 422},
		{"acme", map[string]any{"to": "schema", "server": "db-2"}, 422},
		{"acme", map[string]any{}, 422},
	} {
		r := b.env.Do(t, "POST", "/admin/v1/tenants/"+c.slug+"/move", admin, c.body)
		if r.Status != c.status || r.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("move %s %v: %s, want a %d problem", c.slug, c.body, r, c.status)
		}
	}
	b.env.Must(t, 404, "GET", "/admin/v1/tenants/acme/move", admin, nil)
	r := b.env.Must(t, 202, "POST", "/admin/v1/tenants/acme/move", admin, map[string]any{"to": "database"})
	if r.Header.Get("Location") != "/admin/v1/tenants/acme/move" {
		t.Errorf("Location %q", r.Header.Get("Location"))
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var mv struct{ Step, Error string }
		b.env.Must(t, 200, "GET", "/admin/v1/tenants/acme/move", admin, nil).JSON(t, &mv)
		if mv.Step == control.MoveDone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the move is at step %s (%s) after two minutes", mv.Step, mv.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var tn struct{ Isolation string }
	b.env.Must(t, 200, "GET", "/admin/v1/tenants/acme", admin, nil).JSON(t, &tn)
	if tn.Isolation != isolation.Database {
		t.Errorf("after the move the tenant is on %s", tn.Isolation)
	}
	if n := len(accounts(t, b)); n != 5 {
		t.Errorf("%d accounts after the move, want 5", n)
	}
	// The audit log has every step.
	var steps []string
	log, err := b.env.Control.AuditLog(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range log {
		if len(e.Action) > len("tenant.move") && e.Action[:len("tenant.move")] == "tenant.move" {
			steps = append(steps, e.Action)
		}
	}
	want := []string{control.ActionMoveStart, control.ActionMoveStep, control.ActionMoveStep, control.ActionMoveSwitch, control.ActionMoveDone}
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Errorf("audited %v, want %v", steps, want)
	}
}

// TestMixedDeployment moves tenants of an rls deployment to a schema and
// to a database of their own: readiness, verify and migrate cover every
// placement, and migrate keeps each at the head.
func TestMixedDeployment(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.RLS)
	other := b.env.Tenant(t, "globex")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: isolation.Database}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.mover(move.Options{}).Move(ctx, "globex", control.Placement{Isolation: isolation.Schema}); err != nil {
		t.Fatal(err)
	}
	b.env.Tenant(t, "initech") // the deployment's own strategy, rls
	b.env.Must(t, 200, "GET", "/readyz", "", nil)
	findings, err := app.SafetyFindings(ctx, b.env.Pools, b.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings {
		t.Errorf("verify after the moves: %s %s %s: %s", f.Severity, f.Code, f.Object, f.Detail)
	}
	report, err := b.env.Control.Migrate(ctx, nil)
	if err != nil {
		t.Fatalf("migrate after the moves: %v", err)
	}
	placed := map[string]string{}
	for _, tm := range report.Tenants {
		if tm.Version != report.TenantHead {
			t.Errorf("tenant %s at version %d after migrate, head %d", tm.Tenant, tm.Version, report.TenantHead)
		}
	}
	list, err := b.env.Control.Tenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range list {
		placed[tn.Slug] = tn.Isolation
	}
	if want := map[string]string{"acme": "database", "globex": "schema", "initech": "rls"}; fmt.Sprint(placed) != fmt.Sprint(want) {
		t.Errorf("placements %v, want %v", placed, want)
	}
	for _, key := range []string{b.tn.Editor, other.Editor} {
		b.env.Must(t, 201, "POST", "/v1/accounts", key, map[string]any{"provider": "aws", "external_id": "after-migrate", "name": "x"})
	}
}
