package finops

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestTagsObject(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{"team":"web"}`: `{"team":"web"}`,
		`[{"key":"team","value":"web"},{"key":"env","value":"prod"},{"key":"flag"}]`: `{"env":"prod","flag":null,"team":"web"}`,
		`[{"k":"team"}]`: `[{"k":"team"}]`,
		`[]`:             `{}`,
	} {
		if got := tagsObject(in); got != want {
			t.Errorf("tagsObject(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestNormalizeDecimal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"0.00000080000", "0.00000080000"},
		{"-5.000000000001", "-5.000000000001"},
		{"+3.5", "3.5"},
		{".5", "0.5"},
		{"-.5", "-0.5"},
		{"5.", "5"},
		{"007.10", "7.10"},
		{"-0", "-0"},
		{" 12 ", "12"},
		{"1e-07", "1e-07"},
		{"1.5E+02", "1.5E+02"},
		{"113.50003500000001", "113.50003500000001"},
		{"0E-11", "0E-11"},
		{"8.0000E-7", "8.0000E-7"},
	} {
		if got, ok := NormalizeDecimal(tc.in); !ok || got != tc.want {
			t.Errorf("NormalizeDecimal(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	for _, bad := range []string{"", " ", "-", ".", "e5", "1e", "1e123", "1,5", "1.2.3", "NaN", "Infinity", "0x10", "$3", "3 USD", "1/2", "--1", strings.Repeat("9", 65)} {
		if got, ok := NormalizeDecimal(bad); ok {
			t.Errorf("NormalizeDecimal(%q) = %q, accepted", bad, got)
		}
	}
}

func TestParseFOCUSDateTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2024, 9, 1, 13, 4, 5, 0, time.UTC)
	for _, s := range []string{
		"2024-09-01T13:04:05Z", "2024-09-01 13:04:05", "2024-09-01T13:04:05", "2024-09-01t13:04:05z",
		"2024-09-01T13:04:05.000Z", "2024-09-01T13:04:05.0000000Z", "2024-09-01 13:04:05 UTC",
		"2024-09-01T13:04:05+00:00", "2024-09-01T15:04:05+02:00", "2024-09-01T08:04:05-0500", "2024-09-01T14:04:05+01",
		" 2024-09-01T13:04:05Z ",
	} {
		got, ok := ParseFOCUSDateTime(s)
		if !ok || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseFOCUSDateTime(%q) = %v, %v; want %v", s, got, ok, want)
		}
	}
	if got, ok := ParseFOCUSDateTime("2024-09-01"); !ok || !got.Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("a bare date: %v %v", got, ok)
	}
	if got, ok := ParseFOCUSDateTime("2024-09-01T13:04"); !ok || !got.Equal(time.Date(2024, 9, 1, 13, 4, 0, 0, time.UTC)) {
		t.Errorf("minutes only: %v %v", got, ok)
	}
	if got, ok := ParseFOCUSDateTime("2024-09-01T13:04:05.123456789Z"); !ok || got.Nanosecond() != 123456789 {
		t.Errorf("nanoseconds: %v %v", got, ok)
	}
	for _, bad := range []string{"", "2024-02-30T00:00:00Z", "2024-13-01", "2024-09-01T24:00:00Z", "2024/09/01",
		"09/01/2024 00:00", "2024-09-01T00:00:00 CET", "2024-09-01T00:00:00+25:00", "2024-09-01T00:00:00.Z", "yesterday"} {
		if got, ok := ParseFOCUSDateTime(bad); ok {
			t.Errorf("ParseFOCUSDateTime(%q) = %v, accepted", bad, got)
		}
	}
}

func TestFOCUSHeader(t *testing.T) {
	t.Parallel()
	if !IsFOCUSHeader([]string{"\ufeffBilledCost", "billing_currency", "CHARGEPERIODSTART"}) {
		t.Error("a header in other cases and snake case is not FOCUS")
	}
	if IsFOCUSHeader(strings.Split("account_id,service,usage_date,amount,currency", ",")) {
		t.Error("the five-column header is FOCUS")
	}
	if IsFOCUSHeader([]string{"x_BilledCost", "BillingCurrency", "ChargePeriodStart"}) {
		t.Error("a custom column stands in for BilledCost")
	}
	// Old ids load into the columns that replaced them, unless the dataset
	// has the new one too.
	l, err := newFOCUSLayout([]string{"BilledCost", "BillingCurrency", "ChargePeriodStart", "AmortizedCost", "ChargeType", "ChargeCategory"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !l.has("EffectiveCost") || l.cols[3].name != "EffectiveCost" || l.cols[4].name != "ChargeType" || l.cols[5].name != "ChargeCategory" {
		t.Errorf("aliases: %+v", l.cols)
	}
	for _, tc := range []struct {
		header []string
		want   string
	}{
		{[]string{"BilledCost", "BillingCurrency", "ChargePeriodStart", "billedcost"}, `column "BilledCost" appears twice`},
		{[]string{"BilledCost", "BillingCurrency", "ChargePeriodStart", "x_a", "x_a"}, `column "x_a" appears twice`},
		{[]string{"BilledCost", "BillingCurrency"}, `missing column "ChargePeriodStart"`},
	} {
		if _, err := newFOCUSLayout(tc.header, false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.header, err, tc.want)
		}
	}
}

// readAll reads a fixture's rows, failing on the first error.
func readAll(t *testing.T, src FOCUSSource, replace bool) []focusRow {
	t.Helper()
	l, err := newFOCUSLayout(src.columns(), replace)
	if err != nil {
		t.Fatal(err)
	}
	var (
		rows    []focusRow
		errs    fieldErrors
		scratch []byte
	)
	for {
		cells, name, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r, ok := l.row(cells, name, &errs, &scratch)
		if !ok {
			t.Fatalf("%s: %v", name, errs.err())
		}
		cr := r.CostRow
		cr.AccountID = uuid.New() // the store's to find
		if err := ValidateCostRow(name, cr); err != nil {
			t.Fatalf("%s passes the reader but not ValidateCostRow: %v", name, err)
		}
		rows = append(rows, r)
	}
	return rows
}

func openFixture(t *testing.T, name string) FOCUSSource {
	t.Helper()
	f, err := os.Open("testdata/focus/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	src, err := NewCSVSource(f)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// The fixtures of FOCUS 1.0, 1.1 and 1.2 read as the specification says.
func TestReadFOCUSFixtures(t *testing.T) {
	t.Parallel()
	rows := readAll(t, openFixture(t, "focus-1.0-aws.csv"), false)
	if len(rows) != 5 {
		t.Fatalf("%d rows", len(rows))
	}
	first := rows[0]
	if first.Amount != "0.00000080000" || first.ListCost != "0.000001000000" || first.Currency != "USD" ||
		first.Service != "AWS Lambda" || first.ServiceCategory != "Compute" || first.RegionID != "us-east-1" ||
		first.account != (accountKey{"aws", "222222222222"}) || first.accountName != "prod" ||
		!first.ChargePeriodStart.Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) || first.UsageDate.Format(DateLayout) != "2024-09-01" ||
		first.Tags != `{"team": "web", "env": "prod"}` {
		t.Errorf("first row %+v", first)
	}
	for _, want := range []string{`"x_UsageType":"USE1-Request"`, `"PricingQuantity":4`, `"ListUnitPrice":0.00000025`, `"ProviderName":"AWS"`} {
		if !strings.Contains(first.Focus, want) {
			t.Errorf("focus %s lacks %s", first.Focus, want)
		}
	}
	if strings.Contains(first.Focus, "BilledCost") || strings.Contains(first.Focus, "Tags") {
		t.Errorf("typed columns are kept twice: %s", first.Focus)
	}
	// NULL and empty cells are missing values.
	if s := rows[1].Focus; strings.Contains(s, "CommitmentDiscountId") || strings.Contains(s, "NULL") {
		t.Errorf("NULL kept: %s", s)
	}
	// The credit: negative, on the billing account (no sub account), no tags.
	credit := rows[2]
	if credit.Amount != "-5.000000000001" || credit.account != (accountKey{"aws", "111111111111"}) || credit.accountName != "Example Payer" || credit.Tags != "" {
		t.Errorf("credit %+v", credit)
	}
	// No ServiceName: grouped under its category, and the null is kept.
	if tax := rows[3]; tax.Service != "Other" || !strings.Contains(tax.Focus, `"ServiceName":null`) {
		t.Errorf("tax row %+v", tax)
	}
	sum := new(big.Rat)
	for _, r := range rows {
		v, _ := new(big.Rat).SetString(r.Amount)
		sum.Add(sum, v)
	}
	if got := sum.FloatString(12); got != "108.945679701233" {
		t.Errorf("sum %s", got)
	}

	rows = readAll(t, openFixture(t, "focus-1.1-azure.csv"), false)
	if len(rows) != 3 || rows[0].account != (accountKey{"azure", "11111111-1111-4111-8111-111111111111"}) || rows[0].Currency != "EUR" ||
		!strings.Contains(rows[0].Focus, `"SkuPriceDetails":{"CoreCount": 4, "InstanceType": "Standard_D4s_v5", "x_Tenancy": "Shared"}`) ||
		!strings.Contains(rows[0].Focus, `"CapacityReservationStatus":"Used"`) || rows[1].Amount != "-0.050000000000" {
		t.Errorf("1.1 rows %+v", rows)
	}
	rows = readAll(t, openFixture(t, "focus-1.2-gcp-oracle.csv"), true)
	if len(rows) != 4 || rows[0].account != (accountKey{"gcp", "helios-prod"}) || rows[3].account != (accountKey{"oracle", "ocid1.compartment.oc1..prod"}) ||
		!rows[0].ChargePeriodStart.Equal(time.Date(2024, 11, 3, 10, 0, 0, 123456000, time.UTC)) ||
		!rows[0].BillingPeriodEnd.Equal(time.Date(2024, 12, 1, 0, 0, 0, 0, time.UTC)) ||
		!strings.Contains(rows[0].Focus, `"PricingCurrencyContractedUnitPrice":0.50000000000025`) ||
		!strings.Contains(rows[0].Focus, `"BillingAccountType":"Billing Account"`) || !strings.Contains(rows[0].Focus, `"InvoiceId":"INV-2024-11-0001"`) {
		t.Errorf("1.2 rows %+v", rows)
	}
}

// Every bad cell is named by its row and column.
func TestFOCUSRowErrors(t *testing.T) {
	t.Parallel()
	header := "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,BillingAccountId,ProviderName,ServiceName,Tags,SkuPriceDetails,x_Note\n"
	for _, tc := range []struct {
		name, row string
		replace   bool
		want      []string
	}{
		{"good", "1.5,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", false, nil},
		{"bad amount", "1,5,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", false, []string{"row 2"}}, // 11 fields
		{"not a number", "abc,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", false, []string{"row 2.BilledCost"}},
		{"missing amount", "NULL,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", false, []string{"row 2.BilledCost"}},
		{"currency", "1,XYZ,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", false, []string{"row 2.BillingCurrency"}},
		{"date", "1,USD,2024-02-30T00:00:00Z,,111,AWS,EC2,,,", false, []string{"row 2.ChargePeriodStart"}},
		{"end before start", "1,USD,2024-09-02T00:00:00Z,2024-09-01T00:00:00Z,111,AWS,EC2,,,", false, []string{"row 2.ChargePeriodEnd"}},
		{"no account", "1,USD,2024-09-01T00:00:00Z,,,AWS,EC2,,,", false, []string{"row 2.SubAccountId"}},
		{"no provider", "1,USD,2024-09-01T00:00:00Z,,111,,EC2,,,", false, []string{"row 2.ProviderName"}},
		{"tags not an object", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,"[1]",,`, false, []string{"row 2.Tags"}},
		{"tags not JSON", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,"{'a': 'b'}",,`, false, []string{"row 2.Tags"}},
		{"tags with NUL", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,"{""a"": ""\u0000""}",,`, false, []string{"row 2.Tags"}},
		{"sku price details not JSON: kept as text", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,"{",`, false, nil},
		{"tags as key/value pairs", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,"[{""key"":""team"",""value"":""web""}]",,`, false, nil},
		{"tags as a list of something else", `1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,"[1, 2]",,`, false, []string{"row 2.Tags"}},
		{"replace needs the period", "1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,", true, []string{"row 2.BillingPeriodStart"}},
		{"NUL in text", "1,USD,2024-09-01T00:00:00Z,,111,AWS,EC2,,,a\x00b", false, []string{"row 2.x_Note"}},
	} {
		src, err := NewCSVSource(strings.NewReader(header + tc.row + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := newFOCUSLayout(src.columns(), tc.replace)
		if err != nil {
			t.Fatal(err)
		}
		var (
			errs    fieldErrors
			scratch []byte
		)
		cells, name, err := src.next()
		if err != nil {
			errs.addAll(err)
		} else {
			l.row(cells, name, &errs, &scratch)
		}
		if got := fields(errs.err()); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v (%v)", tc.name, got, tc.want, errs.err())
		}
	}
	if _, err := NewCSVSource(strings.NewReader("account_id,service\n")); err == nil || fields(err)[0] != "header" {
		t.Errorf("a header that is not FOCUS: %v", err)
	}
}

// Parts of one export sent one after the other, each with its header, are
// one dataset; rows keep their line numbers.
func TestFOCUSPartsConcatenated(t *testing.T) {
	t.Parallel()
	part, err := os.ReadFile("testdata/focus/focus-1.2-gcp-restated.csv")
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewCSVSource(strings.NewReader(string(part) + "\ufeff" + string(part)))
	if err != nil {
		t.Fatal(err)
	}
	rows := readAll(t, src, true)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	_, name, err := func() ([]cell, string, error) {
		s, _ := NewCSVSource(strings.NewReader(string(part) + string(part)))
		for range 2 {
			s.next()
		}
		return s.next()
	}()
	if err != nil || name != "row 5" {
		t.Errorf("the second part's first row is %q (%v), want row 5", name, err)
	}
}
