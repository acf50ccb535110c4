package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/app/logging"
	"github.com/bulkheadhq/bulkhead/internal/browser"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// step bounds each wait of the run: a load, a page, a request.
const step = 2 * time.Minute

// chunk is the number of rows per POST /v1/costs: under the API's 100,000
// item and 10 MiB limits.
const chunk = 90_000

var services = []string{
	"AmazonEC2", "AmazonS3", "AmazonRDS", "AWSLambda", "AmazonCloudFront", "AmazonDynamoDB", "AmazonEKS",
	"AmazonCloudWatch", "AWSDataTransfer", "AmazonElastiCache", "VirtualMachines", "StorageAccounts",
	"AzureSQL", "ComputeEngine", "CloudStorage", "BigQuery", "CloudSQL", "CloudRun",
}

type tenant struct {
	name, key string
	rows      int
}

func measure(ctx context.Context, cfg settings) (*results, error) {
	dir := cfg.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "bulkhead-console-bench-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	}
	startCtx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	cluster, err := pgcluster.Start(startCtx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Settings: map[string]string{
		"shared_buffers": "512MB", "work_mem": "16MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min", "jit": "off",
	}})
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	if err := exec(startCtx, cluster.URL("postgres", "postgres"), `CREATE DATABASE bench_console`); err != nil {
		return nil, err
	}
	srv, base, err := serve(ctx, cluster.URL(isolation.AppRole, "bench_console"), cluster.URL("postgres", "bench_console"), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = srv.app.Stop(stopCtx)
	}()

	// The month shown: the last whole calendar month.
	now := time.Now().UTC()
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0)
	last := first.AddDate(0, 1, -1)
	small := &tenant{name: "small", rows: cfg.smallRows}
	large := &tenant{name: "large", rows: cfg.rows}
	for _, t := range []*tenant{small, large} {
		if t.key, err = srv.provision(ctx, t.name); err != nil {
			return nil, err
		}
		begin := time.Now()
		if err := load(ctx, base, t, first, last); err != nil {
			return nil, fmt.Errorf("load %s: %w", t.name, err)
		}
		cfg.logf("%s tenant: %d rows through POST /v1/costs in %s", t.name, t.rows, time.Since(begin).Round(time.Millisecond))
	}
	if err := exec(ctx, cluster.URL("postgres", "bench_console"), `VACUUM ANALYZE`); err != nil {
		return nil, err
	}

	res := &results{Figures: map[string]float64{}, Targets: map[string]bool{}, Machine: machine(), Settings: map[string]string{
		"strategy":   "rls (saas profile), one server in this process, PostgreSQL started by the run",
		"month":      first.Format(time.DateOnly) + " – " + last.Format(time.DateOnly),
		"dashboard":  "/console/costs?from=…&to=…&by=service (daily, stacked by service: one summary per day, then the top tables)",
		"large_rows": fmt.Sprint(large.rows),
		"small_rows": fmt.Sprint(small.rows),
		"runs":       fmt.Sprint(cfg.runs),
		"loading":    fmt.Sprintf("CSV through POST /v1/costs, %d rows a request, %d services, 5 accounts, USD", chunk, len(services)),
		"ready":      "performance mark bulkhead:costs-ready, set two animation frames after the chart and its exact totals are in the page (drawn from one summary by day)",
		"complete":   "performance mark bulkhead:settled: every request of the page answered (the chart split by service, the top tables)",
	}}
	var summaries []float64
	for range 5 {
		begin := time.Now()
		if _, err := get(ctx, base+"/v1/costs/summary?group_by=service&from="+first.Format(time.DateOnly)+"&to="+last.Format(time.DateOnly), large.key); err != nil {
			return nil, err
		}
		summaries = append(summaries, float64(time.Since(begin).Microseconds())/1000)
	}
	res.Figures["large.summary_month_ms"] = median(summaries)

	bctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	b, err := browser.Start(bctx, filepath.Join(dir, "chromium"), 1280, 900)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	dashboard := fmt.Sprintf("/console/costs?from=%s&to=%s&by=service", first.Format(time.DateOnly), last.Format(time.DateOnly))
	cases := []struct {
		name, key, path string
	}{
		{"signin", "", "/console/"},
		{"small", small.key, dashboard},
		{"large", large.key, dashboard},
	}
	for _, c := range cases {
		var got []pageLoad
		for i := range cfg.runs + 1 {
			if ctx.Err() != nil {
				return nil, errStop
			}
			m, err := loadPage(b, base, c.key, c.path)
			if err != nil {
				return nil, fmt.Errorf("%s page, load %d: %w", c.name, i+1, err)
			}
			if i > 0 { // the first warms the server's and PostgreSQL's caches
				got = append(got, m)
			}
		}
		pick := func(f func(pageLoad) float64) float64 {
			xs := make([]float64, len(got))
			for i, m := range got {
				xs[i] = f(m)
			}
			return median(xs)
		}
		res.Figures[c.name+".fcp_ms"] = pick(func(m pageLoad) float64 { return m.FCP })
		if c.key != "" {
			res.Figures[c.name+".ready_ms"] = pick(func(m pageLoad) float64 { return m.Ready })
			res.Figures[c.name+".complete_ms"] = pick(func(m pageLoad) float64 { return m.Complete })
			res.Figures[c.name+".api_ms"] = pick(func(m pageLoad) float64 { return m.API })
			res.Figures[c.name+".api_kib"] = pick(func(m pageLoad) float64 { return m.APIBytes / 1024 })
			res.Figures[c.name+".api_requests"] = pick(func(m pageLoad) float64 { return m.Requests })
		}
		cfg.logf("%s page: %+v", c.name, got)
	}
	for _, c := range []string{"small", "large"} {
		if base := res.Figures["signin.fcp_ms"]; base > 0 {
			res.Figures[c+".ready_ratio"] = res.Figures[c+".ready_ms"] / base
		}
	}
	res.Targets["console_large_ready_1s"] = res.Figures["large.ready_ms"] > 0 && res.Figures["large.ready_ms"] <= goalMs
	return res, nil
}

// pageLoad is what one page load measured, in milliseconds from navigation
// start (bytes for APIBytes).
type pageLoad struct {
	Ready, Complete, FCP, API, APIBytes, Requests float64
}

// probe reads the page's own timings: its ready mark, its first contentful
// paint, and the API requests it made (Resource Timing).
const probe = `(() => {
  const mark = performance.getEntriesByName('bulkhead:costs-ready')[0];
  const settled = performance.getEntriesByName('bulkhead:settled')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const api = performance.getEntriesByType('resource').filter((r) => new URL(r.name).pathname.startsWith('/v1/'));
  const summaries = api.filter((r) => r.name.includes('/v1/costs/summary'));
  return {
    Ready: mark ? mark.startTime : 0,
    Complete: settled ? settled.startTime : 0,
    FCP: fcp ? fcp.startTime : 0,
    API: summaries.reduce((m, r) => Math.max(m, r.responseEnd), 0),
    APIBytes: api.reduce((s, r) => s + (r.encodedBodySize || 0), 0),
    Requests: api.length,
  };
})()`

// loadPage opens path in a fresh tab (a browser context of its own: nothing
// cached) with key signed in, and measures it.
func loadPage(b *browser.Browser, base, key, path string) (pageLoad, error) {
	tab, err := b.Tab(step)
	if err != nil {
		return pageLoad{}, err
	}
	defer tab.Close()
	// Every case first opens the origin (a connection, a process) and, with
	// a key, signs in the way the console keeps a session: this tab's
	// storage.
	if err := tab.Do(step, chromedp.Navigate(base+"/healthz")); err != nil {
		return pageLoad{}, err
	}
	if key != "" {
		err := tab.Do(step, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`sessionStorage.setItem('bulkhead.console.key', %q)`, key)))
		if err != nil {
			return pageLoad{}, err
		}
	}
	wait := chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"][data-settled="true"]`))
	if key == "" {
		wait = chromedp.WaitVisible(chromedp.ID("secret"))
	}
	if err := tab.Do(step, chromedp.Navigate(base+path), wait); err != nil {
		return pageLoad{}, err
	}
	return browser.Run(tab, step, chromedp.Evaluate[pageLoad](probe))
}

// load sends t's rows: t.rows cost items spread over the month's days, the
// services and five accounts, with six-decimal amounts.
func load(ctx context.Context, base string, t *tenant, first, last time.Time) error {
	var accounts []string
	for i := range 5 {
		body := fmt.Sprintf(`{"provider":"aws","external_id":"%012d","name":"account %d"}`, i+1, i+1)
		res, err := post(ctx, base+"/v1/accounts", t.key, "application/json", []byte(body))
		if err != nil {
			return err
		}
		var a struct{ ID string }
		if err := json.Unmarshal(res, &a); err != nil {
			return err
		}
		accounts = append(accounts, a.ID)
	}
	days := int(last.Sub(first).Hours()/24) + 1
	var buf bytes.Buffer
	for start := 0; start < t.rows; start += chunk {
		buf.Reset()
		buf.WriteString("account_id,service,usage_date,amount,currency\n")
		for i := start; i < min(start+chunk, t.rows); i++ {
			fmt.Fprintf(&buf, "%s,%s,%s,%d.%06d,USD\n", accounts[i%len(accounts)], services[(i/7)%len(services)],
				first.AddDate(0, 0, i%days).Format(time.DateOnly), i%500, (i*7919)%1000000)
		}
		if _, err := post(ctx, base+"/v1/costs", t.key, "text/csv", buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func do(ctx context.Context, req *http.Request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, body)
	}
	return body, nil
}

func post(ctx context.Context, url, key, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	return do(ctx, req)
}

func get(ctx context.Context, url, key string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return do(ctx, req)
}

func exec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// server is `bulkhead serve` running in this process.
type server struct {
	app     *fx.App
	control *control.Service
}

// serve migrates the database and serves it on a loopback port; it
// returns the server and its base URL. Its log goes to logPath.
func serve(ctx context.Context, appURL, ownerURL, logPath string) (*server, string, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	env := []string{
		"BULKHEAD_PROFILE=saas", "BULKHEAD_ISOLATION=rls",
		"BULKHEAD_DATABASE_URL=" + appURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + ownerURL,
		"BULKHEAD_HTTP_ADDR=127.0.0.1:0", "BULKHEAD_LOG_FORMAT=json", "BULKHEAD_LOG__LEVEL=warn",
		"BULKHEAD_TENANTS__BOOTSTRAP=", "BULKHEAD_SYSTEM__ENABLED=false",
	}
	s := &server{}
	var srv *httpapi.Server
	s.app = fx.New(
		app.Base(config.Input{Env: env}), app.Server(),
		fx.Decorate(func(cfg *config.Config) *slog.Logger { return logging.NewTo(logFile, "json", cfg.Log.Level) }),
		fx.Populate(&srv, &s.control),
	)
	if err := s.app.Err(); err != nil {
		return nil, "", fmt.Errorf("build the server: %w", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	if _, err := s.control.Migrate(startCtx, nil); err != nil {
		return nil, "", fmt.Errorf("migrate: %w", err)
	}
	if err := s.app.Start(startCtx); err != nil {
		return nil, "", fmt.Errorf("start the server: %w", err)
	}
	return s, "http://" + srv.Addr(), nil
}

// provision creates a tenant and returns an editor key of it.
func (s *server) provision(ctx context.Context, slug string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	if _, err := s.control.CreateTenant(ctx, slug, strings.ToUpper(slug[:1])+slug[1:]); err != nil {
		return "", err
	}
	k, err := s.control.CreateKey(ctx, slug, auth.Editor)
	if err != nil {
		return "", err
	}
	return k.Key, nil
}
