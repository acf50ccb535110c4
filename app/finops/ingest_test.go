package finops

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/store"
)

const acct = "0190c8e2-7a4b-7c3d-8e5f-0123456789ab"

// fields returns the Field of every validation error err joins.
func fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var v *store.ValidationError
		if errors.As(e, &v) {
			out = append(out, v.Field)
		}
	}
	walk(err)
	return out
}

func TestReadCostsCSV(t *testing.T) {
	t.Parallel()
	// A BOM, CRLF line ends, columns in another order, a quoted field with a
	// comma and a quote, spaces around values, upper-case header names.
	body := "\ufeffCurrency,amount,Service,usage_date,account_id\r\n" +
		"usd,0.1,\"Amazon \"\"EC2\"\", compute\",2024-01-31," + acct + "\r\n" +
		" EUR , 12.5 , S3 , 2024-02-29 , " + acct + "\r\n"
	items, err := ReadCostsCSV(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 {
		t.Fatalf("%d items, want 2", len(items))
	}
	a, b := items[0], items[1]
	if a.Service != "Amazon \"EC2\", compute" || a.Currency != "USD" || FormatAmount(a.Amount) != "0.1" ||
		a.UsageDate.Format(DateLayout) != "2024-01-31" || a.AccountID.String() != acct || a.Row != "row 2" {
		t.Errorf("first item %+v", a)
	}
	if b.Service != "S3" || b.Currency != "EUR" || FormatAmount(b.Amount) != "12.5" || b.Row != "row 3" {
		t.Errorf("second item %+v", b)
	}
}

func TestReadCostsCSVErrors(t *testing.T) {
	t.Parallel()
	header := "account_id,service,usage_date,amount,currency\n"
	good := acct + ",EC2,2024-01-01,1,USD\n"
	for _, tc := range []struct {
		name, body string
		fields     []string
	}{
		{"no header", "", []string{"header"}},
		{"unknown column", "account_id,service,usage_date,amount,currency,region\n", []string{"header"}},
		{"missing column", "account_id,service,usage_date,currency\n", []string{"header"}},
		{"duplicate column", "account_id,service,usage_date,amount,amount,currency\n", []string{"header"}},
		{"bad date", header + good + acct + ",EC2,2024-02-30,1,USD\n", []string{"row 3.usage_date"}},
		{"bad amount and currency", header + good + good + acct + ",EC2,2024-01-01,1.0.1,XYZ\n", []string{"row 4.amount", "row 4.currency"}},
		{"bad account", header + "nope,EC2,2024-01-01,1,USD\n", []string{"row 2.account_id"}},
		{"empty service", header + acct + ", ,2024-01-01,1,USD\n", []string{"row 2.service"}},
		{"field count", header + good + acct + ",EC2,2024-01-01,1\n", []string{"row 3"}},
		// A quoted line break is part of its field: rows count records.
		{"line break", header + acct + ",\"EC2\nx\",2024-01-01,1,USD\n" + acct + ",EC2,2024-01-01,1,USDX\n", []string{"row 2.service", "row 3.currency"}},
	} {
		_, err := ReadCostsCSV(strings.NewReader(tc.body))
		if got := fields(err); fmt.Sprint(got) != fmt.Sprint(tc.fields) {
			t.Errorf("%s: fields %v, want %v (err %v)", tc.name, got, tc.fields, err)
		}
	}
	var fe *FormatError
	if _, err := ReadCostsCSV(strings.NewReader(header + acct + `,"EC2,2024-01-01,1,USD` + "\n")); !errors.As(err, &fe) {
		t.Errorf("unterminated quote: %v, want a FormatError", err)
	}
}

func TestReadCostsJSON(t *testing.T) {
	t.Parallel()
	body := `[
		{"account_id": "` + acct + `", "service": "EC2", "usage_date": "2024-01-01", "amount": "0.1", "currency": "USD"},
		{"account_id": "` + acct + `", "service": "EC2", "usage_date": "2024-01-01", "amount": 0.2, "currency": "USD"}
	]`
	items, err := ReadCostsJSON(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || FormatAmount(items[0].Amount.Add(items[1].Amount)) != "0.3" {
		t.Fatalf("items %+v", items)
	}
	for _, tc := range []struct {
		name, body string
		fields     []string
	}{
		{"not an object", `[1, null]`, []string{"[0]", "[1]"}},
		{"unknown field", `[{"account_id":"` + acct + `","service":"x","usage_date":"2024-01-01","amount":1,"currency":"USD","tenant_id":"x"}]`, []string{"[0].tenant_id"}},
		{"missing and null", `[{"account_id":"` + acct + `","service":null,"usage_date":"2024-01-01","currency":"USD"}]`, []string{"[0].service", "[0].amount"}},
		{"wrong types", `[{"account_id":1,"service":"x","usage_date":"2024-01-01","amount":true,"currency":"USD"}]`, []string{"[0].account_id", "[0].amount"}},
		{"control character", `[{"account_id":"` + acct + `","service":"a\u0000b","usage_date":"2024-01-01","amount":1,"currency":"USD"}]`, []string{"[0].service"}},
		{"the first day of year 1", `[{"account_id":"` + acct + `","service":"x","usage_date":"0001-01-01","amount":1,"currency":"USD"}]`, []string{"[0].usage_date"}},
		{"no currency at all", `[{"account_id":"` + acct + `","service":"x","usage_date":"2024-01-01","amount":1,"currency":"XXX"}]`, []string{"[0].currency"}},
	} {
		_, err := ReadCostsJSON(strings.NewReader(tc.body))
		if got := fields(err); fmt.Sprint(got) != fmt.Sprint(tc.fields) {
			t.Errorf("%s: fields %v, want %v (err %v)", tc.name, got, tc.fields, err)
		}
	}
	for _, bad := range []string{``, `{}`, `"x"`, `[{"a":1}`, `[] []`, `[{]`, `[{"amount":1,"amount":2}]`, `[{"tags":{"a":1,"a":2}}]`} {
		var fe *FormatError
		if _, err := ReadCostsJSON(strings.NewReader(bad)); !errors.As(err, &fe) {
			t.Errorf("%q: %v, want a FormatError", bad, err)
		}
	}
}

// Reading stops at the first item past the limit, and many errors are
// reported as a bounded list.
func TestReadCostsLimits(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("account_id,service,usage_date,amount,currency\n")
	for range MaxCostsPerIngest + 1 {
		b.WriteString(acct + ",EC2,2024-01-01,1,USD\n")
	}
	if _, err := ReadCostsCSV(strings.NewReader(b.String())); !errors.Is(err, ErrTooManyCosts) {
		t.Fatalf("%d rows: %v, want ErrTooManyCosts", MaxCostsPerIngest+1, err)
	}
	b.Reset()
	b.WriteString("account_id,service,usage_date,amount,currency\n")
	for range 100 {
		b.WriteString(acct + ",EC2,2024-01-01,x,USD\n")
	}
	_, err := ReadCostsCSV(strings.NewReader(b.String()))
	got := fields(err)
	if len(got) != maxFieldErrors+1 || got[0] != "row 2.amount" || got[maxFieldErrors] != "body" ||
		!strings.Contains(err.Error(), "80 more errors") {
		t.Fatalf("100 bad rows: %d fields %v, err %v", len(got), got, err)
	}
}
