package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/parquet-go/parquet-go"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// fixture reads a FOCUS dataset written from the specification (app/finops
// /testdata/focus).
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../finops/testdata/focus/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// billedSum adds up a CSV dataset's BilledCost, exactly, per currency.
func billedSum(t testing.TB, data []byte) map[string]*big.Rat {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	cost, cur := slices.Index(recs[0], "BilledCost"), slices.Index(recs[0], "BillingCurrency")
	out := map[string]*big.Rat{}
	for _, r := range recs[1:] {
		v, ok := new(big.Rat).SetString(r[cost])
		if !ok {
			t.Fatalf("BilledCost %q", r[cost])
		}
		if out[r[cur]] == nil {
			out[r[cur]] = new(big.Rat)
		}
		out[r[cur]].Add(out[r[cur]], v)
	}
	return out
}

var csvType = []string{"Content-Type", "text/csv"}

type focusItem struct {
	ID                 string                     `json:"id"`
	AccountID          string                     `json:"account_id"`
	Service            string                     `json:"service"`
	UsageDate          string                     `json:"usage_date"`
	Amount             string                     `json:"amount"`
	Currency           string                     `json:"currency"`
	BillingAccountID   *string                    `json:"billing_account_id"`
	ChargePeriodStart  *time.Time                 `json:"charge_period_start"`
	BillingPeriodStart *time.Time                 `json:"billing_period_start"`
	ChargeCategory     *string                    `json:"charge_category"`
	ServiceCategory    *string                    `json:"service_category"`
	RegionID           *string                    `json:"region_id"`
	EffectiveCost      *string                    `json:"effective_cost"`
	ListCost           *string                    `json:"list_cost"`
	ContractedCost     *string                    `json:"contracted_cost"`
	Tags               map[string]any             `json:"tags"`
	Focus              map[string]json.RawMessage `json:"focus"`
}

func focusItems(t testing.TB, env *apitest.Env, key, query string) []focusItem {
	t.Helper()
	var out []focusItem
	path := "/v1/costs?limit=1000&" + query
	for pages := 0; ; pages++ {
		if pages == maxPages {
			t.Fatalf("GET /v1/costs?%s: still a next cursor after %d pages", query, pages)
		}
		var page struct {
			Items      []focusItem `json:"items"`
			NextCursor *string     `json:"next_cursor"`
		}
		env.Must(t, 200, "GET", path, key, nil).JSON(t, &page)
		out = append(out, page.Items...)
		if page.NextCursor == nil {
			return out
		}
		path = "/v1/costs?limit=1000&" + query + "&cursor=" + *page.NextCursor
	}
}

func ratOf(t testing.TB, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("not a decimal: %q", s)
	}
	return r
}

// Datasets of each FOCUS version load whole: every row, the accounts they
// name, amounts to the last decimal, every column kept.
func TestFOCUSVersionsLoad(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	// An account made through the API is the one a dataset's rows join.
	existing := env.Must(t, 201, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "aws", "external_id": "222222222222", "name": "mine"}).Map(t)["id"].(string)
	for _, tc := range []struct {
		file           string
		rows, accounts int
	}{
		{"focus-1.0-aws.csv", 5, 1}, // 222222222222 exists; 111111111111 is new
		{"focus-1.1-azure.csv", 3, 2},
		{"focus-1.2-gcp-oracle.csv", 4, 2},
	} {
		data := fixture(t, tc.file)
		r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, data, csvType...)
		var res struct {
			Inserted        int    `json:"inserted"`
			AccountsCreated int    `json:"accounts_created"`
			ImportID        string `json:"import_id"`
		}
		r.JSON(t, &res)
		if res.Inserted != tc.rows || res.AccountsCreated != tc.accounts || res.ImportID == "" {
			t.Errorf("%s: %s", tc.file, r.Body)
		}
		imp := env.Must(t, 200, "GET", "/v1/costs/imports/"+res.ImportID, a.Viewer, nil).Map(t)
		if imp["status"] != "succeeded" || imp["rows_done"] != float64(tc.rows) || imp["format"] != "csv" || imp["inserted"] != float64(tc.rows) {
			t.Errorf("%s: import %v", tc.file, imp)
		}
	}
	items := focusItems(t, env, a.Viewer, "")
	if len(items) != 12 {
		t.Fatalf("%d items, want 12", len(items))
	}
	byAmount := map[string]focusItem{}
	for _, it := range items {
		byAmount[it.Amount] = it
	}
	// Eleven and twelve decimals, exactly as given; the credit negative.
	lambda, ok := byAmount["0.00000080000"]
	if !ok || lambda.AccountID != existing || *lambda.ListCost != "0.000001000000" || lambda.UsageDate != "2024-09-01" ||
		*lambda.BillingAccountID != "111111111111" || *lambda.RegionID != "us-east-1" || *lambda.ServiceCategory != "Compute" ||
		lambda.Tags["team"] != "web" || !lambda.ChargePeriodStart.Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the Lambda row: %+v", lambda)
	}
	// focus is the row as the dataset had it: FOCUS, custom and typed columns.
	for k, v := range map[string]string{
		"BilledCost": "0.00000080000", "ListCost": "0.000001000000", "x_UsageType": `"USE1-Request"`, "PricingQuantity": "4",
		"ProviderName": `"AWS"`, "ChargePeriodStart": `"2024-09-01T00:00:00Z"`, "BillingCurrency": `"USD"`, "SubAccountId": `"222222222222"`,
	} {
		if got := string(lambda.Focus[k]); got != v {
			t.Errorf("focus %s = %s, want %s", k, got, v)
		}
	}
	if _, ok := lambda.Focus["CommitmentDiscountId"]; ok {
		t.Errorf("an empty cell is kept: %s", lambda.Focus["CommitmentDiscountId"])
	}
	if c := byAmount["-5.000000000001"]; c.ChargeCategory == nil || *c.ChargeCategory != "Credit" || c.Tags != nil {
		t.Errorf("the credit: %+v", c)
	}
	// JSON values are kept as JSON (jsonb: the same object, its keys in
	// jsonb's order).
	var details map[string]any
	az := byAmount["0.172858760200"]
	if err := json.Unmarshal(az.Focus["SkuPriceDetails"], &details); err != nil || fmt.Sprint(details) != "map[CoreCount:4 InstanceType:Standard_D4s_v5 x_Tenancy:Shared]" || az.Currency != "EUR" {
		t.Errorf("the Azure row: %s %s", az.Focus["SkuPriceDetails"], az.Currency)
	}
	if gcp := byAmount["2.000000000001"]; gcp.ChargePeriodStart == nil || gcp.ChargePeriodStart.Nanosecond() != 123456000 ||
		string(gcp.Focus["PricingCurrencyContractedUnitPrice"]) != "0.50000000000025" {
		t.Errorf("the Google row: %+v", gcp)
	}
	// Sums are exact, per currency, and equal the files' own.
	want := map[string]*big.Rat{}
	for _, f := range []string{"focus-1.0-aws.csv", "focus-1.1-azure.csv", "focus-1.2-gcp-oracle.csv"} {
		for cur, v := range billedSum(t, fixture(t, f)) {
			if want[cur] == nil {
				want[cur] = new(big.Rat)
			}
			want[cur].Add(want[cur], v)
		}
	}
	got := map[string]*big.Rat{}
	for k, v := range summary(t, env, a.Viewer, "group_by=provider") {
		cur := k[strings.LastIndex(k, " ")+1:]
		if got[cur] == nil {
			got[cur] = new(big.Rat)
		}
		got[cur].Add(got[cur], ratOf(t, v))
	}
	for cur, w := range want {
		if got[cur] == nil || got[cur].Cmp(w) != 0 {
			t.Errorf("%s: summed %v, the files sum %s", cur, got[cur], w.FloatString(15))
		}
	}
	if s := summary(t, env, a.Viewer, "group_by=provider"); s["aws USD"] != "108.945679701233" || s["oracle USD"] != "7.654321098765" || s["azure EUR"] != "3.122858760207" {
		t.Errorf("by provider: %v", s)
	}
	// The accounts the datasets named exist, with the FOCUS provider.
	var accts struct {
		Items []struct {
			Provider   string `json:"provider"`
			ExternalID string `json:"external_id"`
			Name       string `json:"name"`
		} `json:"items"`
	}
	env.Must(t, 200, "GET", "/v1/accounts?limit=100", a.Viewer, nil).JSON(t, &accts)
	var names []string
	for _, x := range accts.Items {
		names = append(names, x.Provider+"/"+x.ExternalID+"/"+x.Name)
	}
	slices.Sort(names)
	if fmt.Sprint(names) != "[aws/111111111111/Example Payer aws/222222222222/mine azure/11111111-1111-4111-8111-111111111111/prod-platform "+
		"azure/44444444-4444-4444-8444-444444444444/sandbox gcp/helios-prod/Helios prod oracle/ocid1.compartment.oc1..prod/production]" {
		t.Errorf("accounts %v", names)
	}
}

// gzipped CSV and Parquet load like CSV.
func TestFOCUSGzipAndParquet(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	data := fixture(t, "focus-1.0-aws.csv")
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(data)
	w.Close()
	r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, gz.Bytes(), "Content-Type", "text/csv; charset=utf-8", "Content-Encoding", "gzip")
	if r.Map(t)["inserted"] != float64(5) {
		t.Fatalf("gzip: %s", r)
	}
	// Not gzip after all: a 400, nothing written.
	env.Must(t, 400, "POST", "/v1/costs", a.Editor, data, "Content-Type", "text/csv", "Content-Encoding", "gzip")

	type pqRow struct {
		BilledCost        int64             `parquet:"BilledCost,decimal(12:18)"`
		EffectiveCost     float64           `parquet:"EffectiveCost"`
		ListCost          [13]byte          `parquet:"ListCost,decimal(11:30)"`
		BillingCurrency   string            `parquet:"BillingCurrency"`
		ChargePeriodStart time.Time         `parquet:"ChargePeriodStart,timestamp(microsecond)"`
		BillingPeriod     *time.Time        `parquet:"BillingPeriodStart,optional,timestamp(millisecond)"`
		BillingAccountID  string            `parquet:"BillingAccountId"`
		SubAccountID      *string           `parquet:"SubAccountId,optional"`
		ProviderName      string            `parquet:"ProviderName"`
		ServiceName       string            `parquet:"ServiceName"`
		Tags              map[string]string `parquet:"Tags,optional"`
		Quantity          int32             `parquet:"x_Quantity"`
	}
	day := time.Date(2024, 12, 24, 6, 0, 0, 0, time.UTC)
	sub := "333333333333"
	rows := []pqRow{
		// 0.000000800000 exactly, and a list cost of -1.00000000001 (two's complement).
		{BilledCost: 800000, EffectiveCost: 0.1, ListCost: twos(-100_000_000_001), BillingCurrency: "USD", ChargePeriodStart: day,
			BillingPeriod: &day, BillingAccountID: "111", SubAccountID: &sub, ProviderName: "AWS", ServiceName: "EC2",
			Tags: map[string]string{"team": "web"}, Quantity: 3},
		{BilledCost: -2_500_000_000_000, EffectiveCost: -2.5, ListCost: twos(0), BillingCurrency: "USD", ChargePeriodStart: day.Add(time.Hour),
			BillingAccountID: "111", ProviderName: "AWS", ServiceName: "EC2"},
	}
	var pq bytes.Buffer
	pw := parquet.NewGenericWriter[pqRow](&pq)
	if _, err := pw.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	r = env.Must(t, 201, "POST", "/v1/costs", a.Editor, pq.Bytes(), "Content-Type", "application/vnd.apache.parquet")
	if r.Map(t)["inserted"] != float64(2) {
		t.Fatalf("parquet: %s", r)
	}
	items := focusItems(t, env, a.Viewer, "from=2024-12-24&to=2024-12-24")
	if len(items) != 2 {
		t.Fatalf("%d Parquet items", len(items))
	}
	p0, p1 := items[0], items[1]
	if p0.Amount != "0.000000800000" || *p0.EffectiveCost != "0.1" || *p0.ListCost != "-1.00000000001" || p0.Tags["team"] != "web" ||
		string(p0.Focus["x_Quantity"]) != "3" || !p0.ChargePeriodStart.Equal(day) || p0.BillingPeriodStart == nil || p0.UsageDate != "2024-12-24" {
		t.Errorf("first Parquet row %+v (focus %s)", p0, p0.Focus)
	}
	if p1.Amount != "-2.500000000000" || *p1.ListCost != "0.00000000000" || p1.BillingPeriodStart != nil || p1.Tags != nil {
		t.Errorf("second Parquet row %+v", p1)
	}
	// The account is the sub account, else the billing account.
	if p0.AccountID == p1.AccountID {
		t.Errorf("both rows on account %s", p0.AccountID)
	}
	// A bad Parquet row: a 422 problem naming its row and column, nothing
	// written.
	rows[1].BillingCurrency = "XYZ"
	pq.Reset()
	pw = parquet.NewGenericWriter[pqRow](&pq)
	if _, err := pw.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	r = env.Must(t, 422, "POST", "/v1/costs", a.Editor, pq.Bytes(), "Content-Type", "application/vnd.apache.parquet")
	if f := fieldsOf(t, r); fmt.Sprint(f) != "[row 2.BillingCurrency]" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("a bad Parquet row: %v %s", f, r)
	}
	if n := len(focusItems(t, env, a.Viewer, "from=2024-12-24&to=2024-12-24")); n != 2 {
		t.Errorf("%d Parquet items after a rejected file, want 2", n)
	}
	// Not Parquet: a 400.
	if r := env.Do(t, "POST", "/v1/costs", a.Editor, data, "Content-Type", "application/vnd.apache.parquet"); r.Status != 400 {
		t.Errorf("CSV sent as Parquet: %s", r)
	}
}

// A restatement replaces the rows of its billing account and period,
// atomically, and only those; idempotency keys hold.
func TestFOCUSRestatement(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, fixture(t, "focus-1.2-gcp-oracle.csv"), csvType...)
	// Rows of the five-column API are never restated.
	acct := newAccount(t, env, a.Editor, 1)
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, jsonCosts([]cost{{acct, "manual", "2024-11-15", `"9.99"`, "USD"}}))
	before := summary(t, env, a.Viewer, "group_by=billing_account")
	if before["01ABCD-2345EF-6789GH USD"] != "0.750000000002" || before["ocid1.tenancy.oc1..aaaa1234 USD"] != "7.654321098765" || before[" USD"] != "9.99" {
		t.Fatalf("before: %v", before)
	}
	restated := fixture(t, "focus-1.2-gcp-restated.csv")
	// A restatement that fails after its first batches deleted and wrote
	// rows leaves the period as it was: all or nothing.
	lines := strings.SplitAfter(string(restated), "\n")
	var broken strings.Builder
	broken.WriteString(lines[0])
	for range 5000 {
		broken.WriteString(lines[1])
	}
	broken.WriteString(strings.Replace(lines[2], "-1.25", "minus 1.25", 1))
	r := env.Must(t, 422, "POST", "/v1/costs?replace=billing_period", a.Editor, broken.String(), csvType...)
	if f := fieldsOf(t, r); fmt.Sprint(f) != "[row 5002.BilledCost]" {
		t.Errorf("a broken restatement: %v %s", f, r.Body)
	}
	if s := summary(t, env, a.Viewer, "group_by=billing_account"); fmt.Sprint(s) != fmt.Sprint(before) {
		t.Errorf("after a failed restatement: %v, want %v", s, before)
	}
	key := []string{"Content-Type", "text/csv", "Idempotency-Key", "restate-nov"}
	r = env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", a.Editor, restated, key...)
	if m := r.Map(t); m["inserted"] != float64(2) || m["replaced"] != float64(3) {
		t.Errorf("restatement: %s", r)
	}
	after := summary(t, env, a.Viewer, "group_by=billing_account")
	if after["01ABCD-2345EF-6789GH USD"] != "0.650000000001" || after["ocid1.tenancy.oc1..aaaa1234 USD"] != "7.654321098765" || after[" USD"] != "9.99" || len(after) != 3 {
		t.Errorf("after: %v", after)
	}
	// The same request again replays; another body under the key conflicts.
	again := env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", a.Editor, restated, key...)
	if again.Header.Get("Idempotent-Replayed") != "true" || again.Map(t)["replaced"] != float64(3) {
		t.Errorf("replay: %s %v", again, again.Header)
	}
	env.Must(t, 409, "POST", "/v1/costs?replace=billing_period", a.Editor, fixture(t, "focus-1.2-gcp-oracle.csv"), key...)
	// Without replace, the same period is added to, not replaced.
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, restated, csvType...)
	if s := summary(t, env, a.Viewer, "group_by=billing_account"); s["01ABCD-2345EF-6789GH USD"] != "1.300000000002" {
		t.Errorf("appended: %v", s)
	}
	// Restating twice in one file is one restatement: rows of the same
	// period later in the file do not delete earlier ones.
	double := append(append([]byte(nil), restated...), restated[bytes.IndexByte(restated, '\n')+1:]...)
	r = env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", a.Editor, double, csvType...)
	if m := r.Map(t); m["inserted"] != float64(4) || m["replaced"] != float64(4) {
		t.Errorf("a file restating its period twice: %s", r)
	}
	if s := summary(t, env, a.Viewer, "group_by=billing_account"); s["01ABCD-2345EF-6789GH USD"] != "1.300000000002" {
		t.Errorf("after the double restatement: %v", s)
	}
	// replace is for FOCUS only, and has one mode.
	env.Must(t, 400, "POST", "/v1/costs?replace=billing_period", a.Editor, jsonCosts([]cost{{acct, "x", "2024-11-15", "1", "USD"}}))
	env.Must(t, 400, "POST", "/v1/costs?replace=everything", a.Editor, restated, csvType...)
}

// One bad row rejects the whole dataset with a 422 naming its row and
// column; nothing is written, no account created, and the import says why.
func TestFOCUSBadRowWritesNothing(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil, apitest.WithEnv("BULKHEAD_IMPORT__MAX_BYTES", "1048576"))
	a := env.Tenant(t, "acme")
	var b strings.Builder
	b.WriteString("BillingAccountId,SubAccountId,ProviderName,ServiceName,ChargePeriodStart,BilledCost,BillingCurrency,Tags\n")
	for i := range 9000 {
		cost := "0.000000000001"
		switch i {
		case 8000:
			cost = "1,5" // quoted below: one field, not a decimal
		case 8500:
			cost = "twelve"
		}
		fmt.Fprintf(&b, "111,sub-%d,AWS,EC2,2024-09-01T00:00:00Z,%q,USD,\n", i%50, cost)
	}
	importID := uuid.NewString()
	r := env.Must(t, 422, "POST", "/v1/costs", a.Editor, b.String(), "Content-Type", "text/csv", "Import-Id", importID)
	if f := fieldsOf(t, r); fmt.Sprint(f) != "[row 8002.BilledCost row 8502.BilledCost]" {
		t.Errorf("fields %v: %s", f, r.Body)
	}
	if n := len(focusItems(t, env, a.Viewer, "")); n != 0 {
		t.Errorf("%d items written", n)
	}
	if n := len(env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil).Map(t)["items"].([]any)); n != 0 {
		t.Errorf("%d accounts created", n)
	}
	imp := env.Must(t, 200, "GET", "/v1/costs/imports/"+importID, a.Viewer, nil).Map(t)
	if imp["status"] != "failed" || !strings.Contains(fmt.Sprint(imp["error"]), "row 8002.BilledCost") {
		t.Errorf("import %v", imp)
	}
	// The id is taken now.
	taken := env.Must(t, 409, "POST", "/v1/costs", a.Editor, fixture(t, "focus-1.0-aws.csv"), "Content-Type", "text/csv", "Import-Id", importID)
	if d := taken.Map(t)["detail"]; d != "an import with this Import-Id already exists" {
		t.Errorf("an Import-Id taken: detail %q", d)
	}
	for _, tc := range []struct {
		name   string
		body   string
		header []string
		status int
	}{
		{"header only", "BilledCost,BillingCurrency,ChargePeriodStart\n", csvType, 201},
		{"missing column", "BilledCost,BillingCurrency,ChargePeriodStart,BilledCost\n1,USD,2024-09-01,2\n", csvType, 422},
		{"malformed CSV", "BilledCost,BillingCurrency,ChargePeriodStart,BillingAccountId,ProviderName\n\"1,USD,2024-09-01,1,AWS\n", csvType, 400},
		{"over import.max_bytes", "BilledCost,BillingCurrency,ChargePeriodStart,BillingAccountId,ProviderName\n" +
			strings.Repeat("1,USD,2024-09-01,1,AWS\n", 50000), csvType, 413},
		{"bad Import-Id", string(fixture(t, "focus-1.0-aws.csv")), []string{"Content-Type", "text/csv", "Import-Id", "nope"}, 400},
		{"unknown encoding", string(fixture(t, "focus-1.0-aws.csv")), []string{"Content-Type", "text/csv", "Content-Encoding", "br"}, 415},
	} {
		if r := env.Do(t, "POST", "/v1/costs", a.Editor, tc.body, tc.header...); r.Status != tc.status {
			t.Errorf("%s: %s, want %d", tc.name, r, tc.status)
		}
	}
	if n := len(focusItems(t, env, a.Viewer, "")); n != 0 {
		t.Errorf("%d items written", n)
	}
	// A gzip body that expands past the limit is cut off too.
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	w.Write([]byte("BilledCost,BillingCurrency,ChargePeriodStart,BillingAccountId,ProviderName,x_Pad\n1,USD,2024-09-01,1,AWS,"))
	w.Write(bytes.Repeat([]byte("a"), 3<<20))
	w.Close()
	if gz.Len() > 1<<20 {
		t.Fatalf("the compressed body is %d bytes", gz.Len())
	}
	if r := env.Do(t, "POST", "/v1/costs", a.Editor, gz.Bytes(), "Content-Type", "text/csv", "Content-Encoding", "gzip"); r.Status != 413 {
		t.Errorf("a gzip bomb: %s", r)
	}
}

// Summaries group by every FOCUS dimension and add up every metric;
// filters narrow them; budgets scope by provider and tag.
func TestFOCUSDimensions(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	for _, f := range []string{"focus-1.0-aws.csv", "focus-1.1-azure.csv", "focus-1.2-gcp-oracle.csv"} {
		env.Must(t, 201, "POST", "/v1/costs", a.Editor, fixture(t, f), csvType...)
	}
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"group_by=service_category&charge_category=Usage",
			"map[Analytics USD:0.000000000001 Compute EUR:0.122858760200 Compute USD:2.000000800001 Storage EUR:3.000000000007 Storage USD:19.999999999999]"},
		{"group_by=charge_category&provider=aws", "map[Credit USD:-5.000000000001 Purchase USD:100.5 Tax USD:1.10 Usage USD:12.345679701234]"},
		{"group_by=region&provider=gcp", "map[ USD:-1.25 us-central1 USD:2.000000000002]"},
		{"group_by=month&from=2024-09-01&to=2024-11-30", "map[2024-09 USD:108.945679701233 2024-10 EUR:3.122858760207 2024-11 USD:8.404321098767]"},
		{"group_by=tag:team&provider=aws", "map[ USD:-3.900000000001 data USD:12.345678901234 web USD:100.50000080000]"},
		{"group_by=tag:reserved", "map[ EUR:3.122858760207 ...]"},
		{"group_by=service&tag=team=ml&tag=env=prod", "map[Compute Engine USD:2.000000000001]"},
		{"group_by=billing_account&metric=effective_cost&provider=aws", "map[111111111111 USD:8.445679701233]"},
		{"group_by=provider&metric=list_cost&region=westeurope", "map[azure EUR:0.142065289100]"},
		{"group_by=provider&metric=contracted_cost&service=BigQuery", "map[gcp USD:0.000000000001]"},
		{"group_by=day&billing_account=ocid1.tenancy.oc1..aaaa1234", "map[2024-11-10 USD:7.654321098765]"},
	} {
		got := fmt.Sprint(summary(t, env, a.Viewer, tc.query))
		if strings.HasSuffix(tc.want, "...]") {
			if !strings.HasPrefix(got, strings.TrimSuffix(tc.want, "...]")) || !strings.Contains(got, "true USD:100.5") {
				t.Errorf("%s: %s", tc.query, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.query, got, tc.want)
		}
	}
	var s struct {
		GroupBy string `json:"group_by"`
		Metric  string `json:"metric"`
	}
	env.Must(t, 200, "GET", "/v1/costs/summary", a.Viewer, nil).JSON(t, &s)
	if s.GroupBy != "service" || s.Metric != "billed_cost" {
		t.Errorf("defaults %+v", s)
	}
	// Lists filter by the same dimensions.
	if items := focusItems(t, env, a.Viewer, "provider=oracle"); len(items) != 1 || items[0].Amount != "7.654321098765" {
		t.Errorf("oracle items %+v", items)
	}
	if items := focusItems(t, env, a.Viewer, "tag=team=web&charge_category=Purchase"); len(items) != 1 || items[0].Amount != "100.5" {
		t.Errorf("web purchases %+v", items)
	}
	// Budgets scoped by provider and by tag.
	for _, tc := range []struct {
		body  map[string]any
		spent string
	}{
		{map[string]any{"name": "aws", "amount": "200", "currency": "USD", "period": "monthly", "provider": "AWS"}, "108.945679701233"},
		{map[string]any{"name": "web", "amount": "200", "currency": "USD", "period": "monthly", "tag_key": "team", "tag_value": "web"}, "100.50000080000"},
		{map[string]any{"name": "aws lambda", "amount": "200", "currency": "USD", "period": "monthly", "provider": "aws", "service": "AWS Lambda"}, "95.500000799999"},
	} {
		id := env.Must(t, 201, "POST", "/v1/budgets", a.Editor, tc.body).Map(t)["id"].(string)
		b := env.Must(t, 200, "GET", "/v1/budgets/"+id+"?at=2024-09-20", a.Viewer, nil).Map(t)
		if b["spent"] != tc.spent || b["provider"] != tc.body["provider"] && b["provider"] != strings.ToLower(fmt.Sprint(tc.body["provider"])) {
			t.Errorf("%s: %v", tc.body["name"], b)
		}
	}
	env.Must(t, 422, "POST", "/v1/budgets", a.Editor, map[string]any{"name": "half", "amount": "1", "currency": "USD", "period": "monthly", "tag_key": "team"})
}

// What one tenant loads, another never sees, whatever it names; a dataset
// naming the same account ids makes the other tenant accounts of its own.
func TestFOCUSOtherTenantSeesNothing(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a, b := env.Tenant(t, "acme"), env.Tenant(t, "globex")
	r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, fixture(t, "focus-1.0-aws.csv"), csvType...)
	importID := r.Map(t)["import_id"].(string)
	// B cannot read A's import, rows, accounts or totals.
	env.Must(t, 404, "GET", "/v1/costs/imports/"+importID, b.Viewer, nil)
	if n := len(env.Must(t, 200, "GET", "/v1/costs/imports", b.Viewer, nil).Map(t)["items"].([]any)); n != 0 {
		t.Errorf("B lists %d imports", n)
	}
	for _, q := range []string{"", "billing_account=111111111111", "provider=aws", "tag=team=web", "tenant_id=" + a.ID.String()} {
		if items := focusItems(t, env, b.Viewer, q); len(items) != 0 {
			t.Errorf("LEAK: B lists A's items with ?%s: %+v", q, items)
		}
		if s := summary(t, env, b.Viewer, "group_by=billing_account&"+q); len(s) != 0 {
			t.Errorf("LEAK: B's summary with ?%s: %v", q, s)
		}
	}
	// B restating A's billing account and period replaces nothing of A's,
	// and its accounts of the same ids are B's own.
	rb := env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", b.Editor, fixture(t, "focus-1.0-aws.csv"), "Content-Type", "text/csv", "Import-Id", importID)
	if m := rb.Map(t); m["replaced"] != float64(0) || m["accounts_created"] != float64(2) {
		t.Errorf("B's load: %s", rb)
	}
	if s := summary(t, env, a.Viewer, "group_by=billing_account"); s["111111111111 USD"] != "108.945679701233" {
		t.Errorf("A's totals after B's restatement: %v", s)
	}
	aAccounts := env.Must(t, 200, "GET", "/v1/accounts", a.Viewer, nil).Map(t)["items"].([]any)
	for _, it := range focusItems(t, env, b.Viewer, "") {
		for _, x := range aAccounts {
			if it.AccountID == x.(map[string]any)["id"] {
				t.Errorf("LEAK: B's item on A's account %s", it.AccountID)
			}
		}
	}
	// Each import id is its tenant's: A's is still A's alone.
	if imp := env.Must(t, 200, "GET", "/v1/costs/imports/"+importID, a.Viewer, nil).Map(t); imp["inserted"] != float64(5) || imp["replace"] != nil {
		t.Errorf("A's import after B used its id: %v", imp)
	}
}

// twos is n as a 13-byte big-endian two's complement, as Parquet keeps a
// DECIMAL of precision 30.
func twos(n int64) (b [13]byte) {
	for i := 12; i >= 0; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return b
}

// Every strategy loads, restates and summarizes FOCUS data alike, and the
// consolidated summary carries the FOCUS dimensions and metrics across
// tenants.
func TestFOCUSEveryStrategy(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{isolation.RLS, isolation.Schema, isolation.Database} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			env := apitest.Start(t, nil, apitest.WithStrategy(strategy))
			parent, sub := env.Tenant(t, "parent"), env.Tenant(t, "sub")
			for _, tn := range []apitest.Tenant{parent, sub} {
				for _, f := range []string{"focus-1.0-aws.csv", "focus-1.2-gcp-oracle.csv"} {
					env.Must(t, 201, "POST", "/v1/costs", tn.Editor, fixture(t, f), csvType...)
				}
			}
			r := env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", sub.Editor, fixture(t, "focus-1.2-gcp-restated.csv"), csvType...)
			if r.Map(t)["replaced"] != float64(3) {
				t.Errorf("restatement: %s", r)
			}
			if s := summary(t, env, sub.Viewer, "group_by=provider&metric=effective_cost"); fmt.Sprint(s) != "map[aws USD:8.445679701233 gcp USD:0.450000000001 oracle USD:7.654321098765]" {
				t.Errorf("sub's effective cost by provider: %v", s)
			}
			if err := env.Control.GrantKey(t.Context(), parent.Viewer[3:19], sub.Slug); err != nil {
				t.Fatal(err)
			}
			var c consolidated
			env.Must(t, 200, "GET", "/v1/consolidated/costs/summary?tenants=parent,sub&group_by=tag:team&metric=list_cost&provider=gcp", parent.Viewer, nil).JSON(t, &c)
			got := map[string]string{}
			for _, it := range c.Items {
				got[it.Key+" "+it.Currency] = it.Amount
				for _, s := range it.Shares {
					got[it.Key+" "+s.Tenant] = s.Amount
				}
			}
			if fmt.Sprint(got) != "map[ml USD:1.900000000003 ml parent:0.950000000002 ml sub:0.950000000001]" {
				t.Errorf("consolidated list cost of gcp by team: %v", got)
			}
		})
	}
}

// What real exports do beside the letter of FOCUS loads as the same data:
// a byte order mark, CRLF line ends, column names in other cases and snake
// case, a quoted cell spanning lines, numbers with exponents, empty and
// NULL cells, date/times without T or Z. A bad row after a multi-line cell
// is named by its record, as a 422 problem, and nothing is written.
func TestFOCUSExportQuirks(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	header := "\ufeffbilled_cost,billingcurrency,ChargePeriodStart,CHARGEPERIODEND,BillingAccountId,SubAccountId,provider_name,ServiceName,ChargeDescription,EffectiveCost,ListCost,Tags,x_Note\r\n"
	good := header +
		"8.0000E-7,USD,2024-09-01 00:00:00,2024-09-02 00:00:00,111,,AWS,AWS Lambda,\"Requests\r\nper \"\"million\"\"\",1.5E+02,,\"{\"\"team\"\":\"\"web\"\"}\",\r\n" +
		"-1e-12,USD,2024-09-01T00:00:00,,111,,AWS,AWS Lambda,NULL,NULL,\"\",\"\",NULL\r\n"
	r := env.Must(t, 201, "POST", "/v1/costs", a.Editor, good, csvType...)
	if r.Map(t)["inserted"] != float64(2) {
		t.Fatalf("quirks: %s", r)
	}
	items := focusItems(t, env, a.Viewer, "")
	if len(items) != 2 {
		t.Fatalf("%d items", len(items))
	}
	byAmount := map[string]focusItem{}
	for _, it := range items {
		byAmount[it.Amount] = it
	}
	lambda, ok := byAmount["0.00000080000"]
	if !ok || lambda.EffectiveCost == nil || *lambda.EffectiveCost != "150" || lambda.ListCost != nil || lambda.Tags["team"] != "web" ||
		lambda.ChargePeriodStart == nil || !lambda.ChargePeriodStart.Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) || lambda.Service != "AWS Lambda" {
		t.Errorf("the exponent row: %+v (items %+v)", lambda, items)
	}
	if got := string(lambda.Focus["ChargeDescription"]); got != `"Requests\nper \"million\""` {
		t.Errorf("the multi-line description: %s", got)
	}
	if got := string(lambda.Focus["ProviderName"]); got != `"AWS"` {
		t.Errorf("a snake-case column is not kept under its FOCUS name: %v", lambda.Focus)
	}
	credit, ok := byAmount["-0.000000000001"]
	if !ok || credit.EffectiveCost != nil || credit.Tags != nil {
		t.Errorf("the empty and NULL row: %+v", credit)
	}
	for _, k := range []string{"ChargeDescription", "x_Note", "Tags", "ListCost"} {
		if v, ok := credit.Focus[k]; ok && string(v) != "null" {
			t.Errorf("an empty or NULL %s is kept as %s", k, v)
		}
	}
	if s := summary(t, env, a.Viewer, "group_by=provider"); s["aws USD"] != "0.000000799999" {
		t.Errorf("summed %v", s)
	}

	bad := header +
		"1,USD,2024-09-03 00:00:00,,111,,AWS,EC2,\"two\r\nlines\",,,,\r\n" +
		"1.0.0,USD,2024-09-03 00:00:00,,111,,AWS,EC2,,,,,\r\n"
	r = env.Must(t, 422, "POST", "/v1/costs", a.Editor, bad, csvType...)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("Content-Type %q", ct)
	}
	if f := fieldsOf(t, r); fmt.Sprint(f) != "[row 3.BilledCost]" {
		t.Errorf("fields %v: %s", f, r.Body)
	}
	if n := len(focusItems(t, env, a.Viewer, "")); n != 2 {
		t.Errorf("%d items after a rejected file, want 2", n)
	}
}

// A long load reports its progress while it runs, and two restatements of
// one billing period at once end as one of them, never both: the second
// waits for the first and replaces what it wrote.
func TestFOCUSProgressAndConcurrentRestatements(t *testing.T) {
	t.Parallel()
	// Shared tables: the tenant's sessions are in the test's database.
	env := apitest.Start(t, nil, apitest.WithStrategy(isolation.RLS))
	a := env.Tenant(t, "acme")
	restated := fixture(t, "focus-1.2-gcp-restated.csv")
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, fixture(t, "focus-1.2-gcp-oracle.csv"), csvType...)
	lines := strings.SplitAfter(string(restated), "\n")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	client := &http.Client{} // no timeout of its own: the load is as long as the test makes it
	type result struct {
		status int
		body   map[string]any
		err    error
	}
	post := func(body io.Reader, header ...string) <-chan result {
		out := make(chan result, 1)
		req, err := http.NewRequestWithContext(ctx, "POST", env.URL+"/v1/costs?replace=billing_period", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+a.Editor)
		req.Header.Set("Content-Type", "text/csv")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		go func() {
			res, err := client.Do(req)
			if err != nil {
				out <- result{err: err}
				return
			}
			defer res.Body.Close()
			var m map[string]any
			err = json.NewDecoder(res.Body).Decode(&m)
			out <- result{status: res.StatusCode, body: m, err: err}
		}()
		return out
	}
	wait := func(what string, ch <-chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s: %v", what, r.err)
			}
			return r
		case <-ctx.Done():
			t.Fatalf("%s: no response before the deadline", what)
		}
		return result{}
	}

	// A: a restatement whose body keeps coming, 4,000 rows at a time,
	// until its progress shows.
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	stop := make(chan struct{})
	written := make(chan int64, 1)
	go func() {
		var rows int64
		defer func() { written <- rows }()
		if _, err := io.WriteString(pw, lines[0]); err != nil {
			return
		}
		chunk := strings.Repeat(lines[1], 4000)
		for range 1000 { // bounded: at most 4,000,000 rows
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(pw, chunk); err != nil {
				return
			}
			rows += 4000
		}
	}()
	importID := uuid.NewString()
	first := post(pr, "Import-Id", importID)
	var running map[string]any
	for ctx.Err() == nil {
		r := env.Do(t, "GET", "/v1/costs/imports/"+importID, a.Viewer, nil)
		if r.Status == 200 {
			if m := r.Map(t); m["status"] == "running" && m["rows_done"].(float64) > 0 {
				running = m
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if running == nil {
		t.Fatal("no progress of the running import before the deadline")
	}
	if running["inserted"] != nil || running["finished_at"] != nil {
		t.Errorf("a running import with an outcome: %v", running)
	}
	close(stop)
	var sent int64
	select {
	case sent = <-written:
	case <-ctx.Done():
		t.Fatal("the writer did not stop before the deadline")
	}

	// B: a restatement of the same period, while A holds it. It waits.
	second := post(bytes.NewReader(restated))
	conn, err := pgx.Connect(ctx, env.DB.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var waiting int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatalf("waiting for the second restatement to wait: %v", err)
		}
		if waiting > 0 {
			break
		}
		select {
		case r := <-second:
			t.Fatalf("the second restatement did not wait for the first: %+v", r)
		case <-ctx.Done():
			t.Fatal("the second restatement never waited for the first")
		case <-time.After(50 * time.Millisecond):
		}
	}
	pw.Close() // A's body ends: A commits, then B runs
	ra := wait("the first restatement", first)
	if ra.status != 201 || ra.body["inserted"] != float64(sent) || ra.body["replaced"] != float64(3) {
		t.Errorf("the first restatement (%d rows sent): %d %v", sent, ra.status, ra.body)
	}
	rb := wait("the second restatement", second)
	if rb.status != 201 || rb.body["inserted"] != float64(2) || rb.body["replaced"] != float64(sent) {
		t.Errorf("the second restatement: %d %v", rb.status, rb.body)
	}
	if s := summary(t, env, a.Viewer, "group_by=billing_account"); s["01ABCD-2345EF-6789GH USD"] != "0.650000000001" || s["ocid1.tenancy.oc1..aaaa1234 USD"] != "7.654321098765" {
		t.Errorf("after both restatements: %v", s)
	}
	if imp := env.Must(t, 200, "GET", "/v1/costs/imports/"+importID, a.Viewer, nil).Map(t); imp["status"] != "succeeded" || imp["rows_done"] != float64(sent) {
		t.Errorf("the first import: %v", imp)
	}
}

// A billing account id is its provider's: restating AWS's account 42
// leaves another provider's account 42 alone.
func TestFOCUSRestatementIsPerProvider(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	a := env.Tenant(t, "acme")
	const header = "ProviderName,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,BilledCost,BillingCurrency,ServiceName\n"
	env.Must(t, 201, "POST", "/v1/costs", a.Editor, header+
		"AWS,42,2024-11-01T00:00:00Z,2024-12-01T00:00:00Z,2024-11-02T00:00:00Z,1.000000000001,USD,EC2\n"+
		"Oracle,42,2024-11-01T00:00:00Z,2024-12-01T00:00:00Z,2024-11-02T00:00:00Z,2.000000000002,USD,Compute\n", csvType...)
	r := env.Must(t, 201, "POST", "/v1/costs?replace=billing_period", a.Editor, header+
		"AWS,42,2024-11-01T00:00:00Z,2024-12-01T00:00:00Z,2024-11-03T00:00:00Z,3.000000000003,USD,EC2\n", csvType...)
	if m := r.Map(t); m["replaced"] != float64(1) || m["inserted"] != float64(1) {
		t.Errorf("restatement: %s", r)
	}
	if s := summary(t, env, a.Viewer, "group_by=provider&from=2024-11-01&to=2024-11-30"); fmt.Sprint(s) != "map[aws USD:3.000000000003 oracle USD:2.000000000002]" {
		t.Errorf("by provider: %v", s)
	}
}
