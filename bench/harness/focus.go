package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

// The FOCUS workload: one billing export of FocusRows rows loaded through
// HTTP into a fresh tenant of each strategy, against the physical limit —
// COPY of the very same rows into the very same table, by a superuser (the
// owner cannot COPY FROM into a table whose RLS is forced), in the same run
// — with the server's resident memory sampled while it loads; then a
// month's summary by service and by tag through HTTP against the same
// query run directly.

// focusMonth is the month the generated export bills.
var focusMonth = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// focusColumns is the generated export's header: FOCUS 1.2 columns with
// the widths real exports have (ARNs, descriptions, JSON), and a custom
// column.
var focusColumns = []string{
	"BillingAccountId", "BillingAccountName", "BillingAccountType", "SubAccountId", "SubAccountName", "ProviderName",
	"PublisherName", "InvoiceIssuerName", "InvoiceId", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart",
	"ChargePeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "BilledCost",
	"EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice", "PricingCategory",
	"PricingQuantity", "PricingUnit", "ConsumedQuantity", "ConsumedUnit", "BillingCurrency", "ServiceName",
	"ServiceCategory", "ServiceSubcategory", "SkuId", "SkuPriceId", "SkuPriceDetails", "ResourceId", "ResourceName",
	"ResourceType", "RegionId", "RegionName", "AvailabilityZone", "CommitmentDiscountId", "CommitmentDiscountStatus",
	"Tags", "x_UsageType",
}

// writeFOCUS writes an export of n rows to path: 200 services over 50 sub
// accounts and 20 regions, every hour of focusMonth, amounts with up to
// twelve decimals, credits, and 2 to 5 tags a row.
func writeFOCUS(path string, n int, seed uint64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(strings.Join(focusColumns, ",") + "\n")
	rng := rand.New(rand.NewPCG(seed, 15))
	cats := []string{"Compute", "Storage", "Databases", "Networking", "Analytics", "AI and Machine Learning"}
	teams := []string{"web", "data", "ml", "platform", "payments", "search", "mobile", "infra"}
	envs := []string{"prod", "staging", "dev"}
	regions := make([]string, 20)
	for i := range regions {
		regions[i] = fmt.Sprintf("region-%02d", i)
	}
	hours := 24 * 31
	for i := range n {
		svc := rng.IntN(200)
		sub := rng.IntN(50)
		region := regions[rng.IntN(len(regions))]
		start := focusMonth.Add(time.Duration(rng.IntN(hours)) * time.Hour)
		category, class := "Usage", ""
		micro := rng.Int64N(5_000_000_000) // up to 5000, six decimals
		cost := fmt.Sprintf("%d.%06d%06d", micro/1_000_000, micro%1_000_000, rng.IntN(1_000_000))
		switch {
		case i%97 == 0:
			category, cost = "Credit", "-"+cost
		case i%389 == 0:
			category, class, cost = "Usage", "Correction", "-"+cost
		case i%211 == 0:
			category = "Tax"
		}
		var tags strings.Builder
		fmt.Fprintf(&tags, `{"team":"%s","env":"%s"`, teams[(svc+sub)%len(teams)], envs[sub%len(envs)])
		for k := range rng.IntN(4) {
			fmt.Fprintf(&tags, `,"k%d":"v%d"`, k, rng.IntN(1000))
		}
		tags.WriteString("}")
		res := fmt.Sprintf("arn:aws:service%03d:%s:%012d:resource/r-%016x", svc, region, 100000000000+sub, rng.Uint64())
		row := []string{
			"111122223333", "Example Corp Payer", "Billing Account", strconv.Itoa(100000000000 + sub), fmt.Sprintf("team-%02d-account", sub),
			"AWS", "AWS", "AWS", "INV-2025-03-0001", focusMonth.Format(time.RFC3339), focusMonth.AddDate(0, 1, 0).Format(time.RFC3339),
			start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339), category, class,
			fmt.Sprintf("Service %03d usage in %s, per hour, on-demand rate", svc, region), "Usage-Based", cost, cost, cost, cost,
			"0.0000123400", "0.0000111100", "Standard", "1000", "Hours", "1000", "Hours", "USD",
			fmt.Sprintf("Service %03d", svc), cats[svc%len(cats)], "Subcategory " + strconv.Itoa(svc%17),
			fmt.Sprintf("SKU%08d", svc*7919), fmt.Sprintf("SKU%08d.P%04d", svc*7919, sub),
			`{"CoreCount":4,"x_Tenancy":"Shared"}`, res, fmt.Sprintf("r-%016x", rng.Uint64()), "Instance", region, "Region " + region,
			region + "a", "", "", tags.String(), fmt.Sprintf("USE1-BoxUsage:m%d.large", svc%8),
		}
		for j, v := range row {
			if j > 0 {
				w.WriteByte(',')
			}
			if strings.ContainsAny(v, "\",\n") {
				w.WriteString(`"` + strings.ReplaceAll(v, `"`, `""`) + `"`)
			} else {
				w.WriteString(v)
			}
		}
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return info.Size(), f.Sync()
}

// focus runs the FOCUS workload on every selected strategy (the baseline
// has none: COPY is this workload's baseline).
func (h *harness) focus(ctx context.Context, deps map[string]*deployment) error {
	if h.cfg.FocusRows <= 0 {
		return nil
	}
	path := filepath.Join(h.dir, "focus.csv")
	var size int64
	err := h.phase("focus.generate", func() (err error) {
		size, err = writeFOCUS(path, h.cfg.FocusRows, h.cfg.Seed)
		return err
	})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	h.set("focus.rows", float64(h.cfg.FocusRows))
	h.set("focus.file_mb", float64(size)/(1<<20))
	for _, s := range h.cfg.Strategies {
		if s == Baseline || deps[s] == nil {
			continue
		}
		if err := h.phase(s+".focus", func() error { return h.focusOn(ctx, deps[s], path, size) }); err != nil {
			return err
		}
	}
	return nil
}

// focusOn loads the export into a new tenant of d, then COPYs the same
// rows, then compares the summaries.
func (h *harness) focusOn(ctx context.Context, d *deployment, path string, size int64) error {
	slug := "focus-" + d.name
	t, err := d.srv.control.CreateTenant(ctx, slug, "")
	if err != nil {
		return err
	}
	k, err := d.srv.control.CreateKey(ctx, slug, auth.Editor)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Hour}

	// Through HTTP, streamed from disk; the server's memory sampled.
	runtime.GC()
	debug.FreeOSMemory()
	rss := startRSS(20 * time.Millisecond)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.srv.url+"/v1/costs", f)
	if err != nil {
		f.Close()
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+k.Key)
	begin := time.Now()
	res, err := client.Do(req)
	took := time.Since(begin)
	f.Close()
	growth := rss.stop()
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var out struct {
		Inserted int `json:"inserted"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(body, &out) != nil || out.Inserted != h.cfg.FocusRows {
		return fmt.Errorf("load the export into %s: %d %.300s", d.name, res.StatusCode, body)
	}
	httpRate := float64(h.cfg.FocusRows) / took.Seconds()
	h.set(d.name+".focus_ingest.rows_per_s", httpRate)
	h.set(d.name+".focus_ingest.mb_per_s", float64(size)/(1<<20)/took.Seconds())
	h.set(d.name+".focus_ingest.rss_growth_mb", float64(growth)/(1<<20))
	h.logf("%s: loaded %d FOCUS rows through HTTP in %s (%.0f rows/s), RSS grew %.0f MB", d.name, out.Inserted, took.Round(time.Millisecond), httpRate, float64(growth)/(1<<20))

	// COPY of the same rows into the same table: taken out, deleted, put
	// back, as a superuser.
	conn, table, err := h.tenantTable(ctx, d, t.ID)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rowsFile := path + ".copy"
	defer os.Remove(rowsFile)
	if err := copyOut(ctx, conn, table, t.ID, rowsFile); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1`, t.ID); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `VACUUM `+table); err != nil {
		return err
	}
	copied, copyTook, err := copyIn(ctx, conn, table, rowsFile)
	if err != nil {
		return err
	}
	if copied != int64(h.cfg.FocusRows) {
		return fmt.Errorf("COPY put back %d rows of %d", copied, h.cfg.FocusRows)
	}
	copyRate := float64(copied) / copyTook.Seconds()
	h.set(d.name+".focus_ingest.copy_rows_per_s", copyRate)
	h.set(d.name+".focus_ingest.vs_copy", httpRate/copyRate)
	h.logf("%s: COPY of the same rows in %s (%.0f rows/s): HTTP is %.2f× COPY", d.name, copyTook.Round(time.Millisecond), copyRate, httpRate/copyRate)
	if _, err := conn.Exec(ctx, `ANALYZE `+table); err != nil {
		return err
	}

	// A month's summaries: through HTTP, and the same query directly.
	from, to := focusMonth.Format(time.DateOnly), focusMonth.AddDate(0, 1, -1).Format(time.DateOnly)
	for _, q := range []struct{ name, group, key string }{
		{"service", "service", `c.service`},
		{"tag", "tag:team", `COALESCE(c.tags ->> 'team', '')`},
	} {
		query := url.Values{"group_by": {q.group}, "from": {from}, "to": {to}}
		viaHTTP, err := timeBest(h.focusRepeats(), func() error {
			return getOK(ctx, client, d.srv.url+"/v1/costs/summary?"+query.Encode(), k.Key)
		})
		if err != nil {
			return fmt.Errorf("summary by %s of %s: %w", q.name, d.name, err)
		}
		sql := `SELECT ` + q.key + `, c.currency, sum(c.amount)::text FROM ` + table + ` c
			WHERE c.tenant_id = $1 AND c.usage_date BETWEEN $2 AND $3 GROUP BY 1, 2 ORDER BY 1, 2`
		direct, err := timeBest(h.focusRepeats(), func() error {
			rows, err := conn.Query(ctx, sql, t.ID, from, to)
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("summary by %s of %s, directly: %w", q.name, d.name, err)
		}
		h.set(d.name+".focus_summary_"+q.name+".ms", float64(viaHTTP)/float64(time.Millisecond))
		h.set(d.name+".focus_summary_"+q.name+".direct_ms", float64(direct)/float64(time.Millisecond))
		h.set(d.name+".focus_summary_"+q.name+".ratio", float64(viaHTTP)/float64(direct))
		h.logf("%s: a month by %s: %s through HTTP, %s directly", d.name, q.name, viaHTTP.Round(time.Microsecond), direct.Round(time.Microsecond))
	}
	return nil
}

// focusRepeats is how many times each summary runs; the median counts.
func (h *harness) focusRepeats() int { return max(3, h.cfg.Rounds*3) }

// tenantTable opens a superuser connection to where d keeps tenant id's
// cost items and returns the table's qualified name.
func (h *harness) tenantTable(ctx context.Context, d *deployment, id uuid.UUID) (*pgx.Conn, string, error) {
	db, schemaName := d.db, "public"
	switch d.name {
	case Schema:
		schemaName = schema.Name(id)
	case Database:
		db = database.DBName(id)
	}
	conn, err := pgx.Connect(ctx, h.cluster.URL("postgres", db))
	if err != nil {
		return nil, "", err
	}
	return conn, pgx.Identifier{schemaName, "cost_items"}.Sanitize(), nil
}

func copyOut(ctx context.Context, conn *pgx.Conn, table string, tenant uuid.UUID, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	// The id is a literal: COPY takes no parameters. It is a UUID this
	// process made.
	_, err = conn.PgConn().CopyTo(ctx, w, `COPY (SELECT * FROM `+table+` WHERE tenant_id = '`+tenant.String()+`') TO STDOUT (FORMAT binary)`)
	if err != nil {
		return err
	}
	return w.Flush()
}

func copyIn(ctx context.Context, conn *pgx.Conn, table, path string) (int64, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	begin := time.Now()
	tag, err := conn.PgConn().CopyFrom(ctx, bufio.NewReaderSize(f, 1<<20), `COPY `+table+` FROM STDIN (FORMAT binary)`)
	return tag.RowsAffected(), time.Since(begin), err
}

func getOK(ctx context.Context, client *http.Client, u, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", u, res.StatusCode)
	}
	return nil
}

// timeBest runs fn n times and returns the median duration.
func timeBest(n int, fn func() error) (time.Duration, error) {
	took := make([]time.Duration, 0, n)
	for range n {
		begin := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		took = append(took, time.Since(begin))
	}
	slices.Sort(took)
	return took[len(took)/2], nil
}

// rssSampler records the highest resident set size of this process (where
// the servers run) above what it was at the start.
type rssSampler struct {
	base, peak int64
	done       chan struct{}
	wg         sync.WaitGroup
}

func startRSS(every time.Duration) *rssSampler {
	s := &rssSampler{base: rss(), done: make(chan struct{})}
	s.peak = s.base
	s.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
				s.peak = max(s.peak, rss())
			}
		}
	})
	return s
}

// stop returns the growth: the peak above the start.
func (s *rssSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	s.peak = max(s.peak, rss())
	return s.peak - s.base
}

// rss is the resident set size of this process, from /proc (0 where there
// is none).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
