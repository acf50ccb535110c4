package console_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/browser"
)

// A gzipped FOCUS export lands: its row carries the Import-Id the console
// sent, the import's progress as GET /v1/costs/imports/{id} reports it, and
// its final count; the API totals what the file held. A FOCUS file with a
// bad cost is refused with the API's 422 detail on its own row, and its
// import is recorded as failed.
func testFOCUSUploadShowsIngestProgress(t *testing.T, b *browser.Browser) {
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	dir := t.TempDir()

	const header = "BillingAccountId,SubAccountId,ProviderName,ServiceName,ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency\n"
	var csv strings.Builder
	csv.WriteString(header)
	want := new(big.Rat)
	const rows = 20000
	for i := range rows {
		cost := fmt.Sprintf("%d.%06d", i%89, i*7919%1000000)
		day := 1 + i%29 // ends the next day, in June
		fmt.Fprintf(&csv, "111111111111,sub-%d,AWS,Service%02d,2025-06-%02dT00:00:00Z,2025-06-%02dT00:00:00Z,%s,USD\n",
			i%7, i%11, day, day+1, cost)
		want.Add(want, rat(t, cost))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(csv.String())); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "june-focus.csv.gz")
	if err := os.WriteFile(good, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	badBody := header +
		"111111111111,sub-1,AWS,EC2,2025-06-01T00:00:00Z,2025-06-02T00:00:00Z,1.5,USD\n" +
		"111111111111,sub-1,AWS,EC2,2025-06-02T00:00:00Z,2025-06-03T00:00:00Z,lots,USD\n"
	bad := filepath.Join(dir, "broken-focus.csv")
	if err := os.WriteFile(bad, []byte(badBody), 0o644); err != nil {
		t.Fatal(err)
	}

	p := open(t, b, env)
	p.signIn("/console/upload", a.Editor)
	p.do("upload", chromedp.SetUploadFiles(chromedp.ID("u-files"), []string{good, bad}), chromedp.Click(chromedp.ID("u-send")))
	p.do("wait for both files", chromedp.WaitReady(chromedp.CSS(`tr[data-file="broken-focus.csv"]:is([data-state="done"], [data-state="failed"])`)))

	row := func(file string) map[string]string {
		return eval[map[string]string](p, fmt.Sprintf(`(() => { const r = document.querySelector('tr[data-file=%q]');
			return { ...r.dataset, ingest: r.querySelector('.ingest')?.textContent ?? '', result: r.querySelector('.result').textContent }; })()`, file))
	}
	st := row("june-focus.csv.gz")
	if st["state"] != "done" || !strings.Contains(st["result"], fmt.Sprintf("Ingested %d rows", rows)) {
		t.Errorf("june-focus.csv.gz: %v", st)
	}
	id := st["importId"]
	if id == "" {
		t.Fatalf("june-focus.csv.gz: the row names no import: %v", st)
	}
	var imp struct {
		Status   string
		RowsDone int64 `json:"rows_done"`
		Inserted *int64
	}
	env.Must(t, 200, "GET", "/v1/costs/imports/"+id, a.Viewer, nil).JSON(t, &imp)
	if imp.Status != "succeeded" || imp.RowsDone != rows {
		t.Errorf("the API's import %s: %+v", id, imp)
	}
	if st["importStatus"] != imp.Status || st["importRows"] != fmt.Sprint(imp.RowsDone) ||
		!strings.Contains(st["ingest"], "succeeded") || !strings.Contains(st["ingest"], "20,000 rows") {
		t.Errorf("june-focus.csv.gz shows the import as %v; the API says %+v", st, imp)
	}
	perCurrency, _ := sums(t, summary(t, env, a.Viewer, "from=2025-06-01&to=2025-06-30&group_by=day"))
	if perCurrency["USD"] == nil || perCurrency["USD"].Cmp(want) != 0 {
		t.Errorf("after the upload the API totals %v, want %s", perCurrency["USD"], want.FloatString(6))
	}

	// The refused file: the API's own 422 detail on its row, and its import
	// (the id the console sent) recorded as failed.
	problem := env.Must(t, 422, "POST", "/v1/costs", a.Editor, badBody, "Content-Type", "text/csv").Map(t)
	detail := problem["detail"].(string)
	failed := row("broken-focus.csv")
	if failed["state"] != "failed" || !strings.Contains(failed["result"], detail) || !strings.Contains(failed["result"], "422") {
		t.Errorf("broken-focus.csv: %v; want the 422 detail %q", failed, detail)
	}
	if failed["importId"] == "" || failed["importId"] == id {
		t.Fatalf("broken-focus.csv: the row names no import of its own: %v", failed)
	}
	var f struct{ Status string }
	env.Must(t, 200, "GET", "/v1/costs/imports/"+failed["importId"], a.Viewer, nil).JSON(t, &f)
	if f.Status != "failed" || failed["importStatus"] != "failed" {
		t.Errorf("broken-focus.csv: the row says %v, the API's import is %s", failed, f.Status)
	}
	if n := len(summary(t, env, a.Viewer, "from=2025-06-01&to=2025-06-30&group_by=service")); n != 11 {
		t.Errorf("%d services after the uploads, want the good file's 11 (the broken file must write nothing)", n)
	}
	p.clean()
}
