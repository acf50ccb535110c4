package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parquet-go/parquet-go"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// costs import loads CSV, gzipped CSV and Parquet exports, all or nothing,
// into the tenant it names.
func TestCostsImport(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL}
	if code, _, stderr := runCLI(t, env, "tenant", "create", "acme"); code != 0 {
		t.Fatalf("tenant create: %s", stderr)
	}
	dir := t.TempDir()
	csvData, err := os.ReadFile("../../app/finops/testdata/focus/focus-1.0-aws.csv")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(csvData)
	zw.Close()
	type row struct {
		BilledCost        string    `parquet:"BilledCost"`
		BillingCurrency   string    `parquet:"BillingCurrency"`
		ChargePeriodStart time.Time `parquet:"ChargePeriodStart,timestamp"`
		BillingAccountID  string    `parquet:"BillingAccountId"`
		ProviderName      string    `parquet:"ProviderName"`
		ServiceName       string    `parquet:"ServiceName"`
	}
	var pq bytes.Buffer
	pw := parquet.NewGenericWriter[row](&pq)
	if _, err := pw.Write([]row{{"0.000000000007", "USD", time.Date(2024, 9, 30, 0, 0, 0, 0, time.UTC), "111111111111", "AWS", "AWS Lambda"}}); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		rows float64
	}{
		{write("export.csv", csvData), 5},
		{write("export.csv.gz", gz.Bytes()), 5},
		{write("export.parquet", pq.Bytes()), 1},
	} {
		code, out, stderr := runCLI(t, env, "costs", "import", tc.file, "--tenant", "acme", "-o", "json")
		if code != 0 {
			t.Fatalf("costs import %s: exit %d: %s", tc.file, code, stderr)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(out), &res); err != nil || res["inserted"] != tc.rows {
			t.Errorf("costs import %s printed %s", tc.file, out)
		}
	}
	// An export in parts, gzipped and not: one dataset, one transaction.
	if code, out, stderr := runCLI(t, env, "costs", "import", write("part-1.csv.gz", gz.Bytes()), write("part-2.csv", csvData), "--tenant", "acme", "-o", "json"); code != 0 || !strings.Contains(out, `"inserted": 10`) {
		t.Errorf("two parts: exit %d: %s %s", code, out, stderr)
	}
	// A bad row: exit 1, naming it; nothing more written.
	bad := write("bad.csv", []byte(strings.Replace(string(csvData), "12.345678901234", "12,3", 1)))
	code, _, stderr := runCLI(t, env, "costs", "import", bad, "--tenant", "acme")
	if code != exitFailure || !strings.Contains(stderr, "row 3") {
		t.Errorf("a bad row: exit %d: %s", code, stderr)
	}
	conn, err := pgx.Connect(t.Context(), db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n int
	var sum string
	if err := conn.QueryRow(t.Context(), `SELECT count(*), sum(amount)::text FROM cost_items`).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	// Four times the export's exact sum, and the Parquet row's seven trillionths.
	if n != 21 || sum != "435.782718804939" {
		t.Errorf("%d rows summing %s", n, sum)
	}
	for _, args := range [][]string{
		{"costs", "import", bad},
		{"costs", "import", bad, "--tenant", "acme", "--replace", "all"},
		{"costs", "import", write("x.parquet", pq.Bytes()), bad, "--tenant", "acme"},
	} {
		if code, _, stderr := runCLI(t, env, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2: %s", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI(t, env, "costs", "import", bad, "--tenant", "nobody"); code != exitFailure || !strings.Contains(stderr, "not found") {
		t.Errorf("an unknown tenant: exit %d: %s", code, stderr)
	}
}
