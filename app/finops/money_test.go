package finops

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseAmount(t *testing.T) {
	t.Parallel()
	// Amounts keep every decimal they are given, trailing zeros included:
	// "as given" is also what PostgreSQL's numeric keeps and writes back.
	for _, tc := range []struct{ in, want, msg string }{
		{"0.1", "0.1", ""},
		{"12.345600", "12.345600", ""},
		{"-3", "-3", ""},
		{"+3.5", "3.5", ""},
		{".5", "0.5", ""},
		{"1.1000000", "1.1000000", ""},
		{"1e2", "100", ""},
		{"1.5e-6", "0.0000015", ""},
		{"0.00000080000", "0.00000080000", ""},
		{"0.000000000001", "0.000000000001", ""},
		{"-5.000000000001", "-5.000000000001", ""},
		{"123456789012345678901234567890.123456789012", "123456789012345678901234567890.123456789012", ""},
		{"1e99", strings.Repeat("0", 0) + "1" + strings.Repeat("0", 99), ""},
		{"1e999", "", "decimal number"},
		{strings.Repeat("1", 65), "", "decimal number"},
		{"NaN", "", "decimal number"},
		{"Infinity", "", "decimal number"},
		{"0x10", "", "decimal number"},
		{"1,5", "", "decimal number"},
		{"", "", "required"},
	} {
		d, msg := ParseAmount(tc.in)
		switch {
		case tc.msg == "" && msg != "":
			t.Errorf("ParseAmount(%q): %s", tc.in, msg)
		case tc.msg != "" && !strings.Contains(msg, tc.msg):
			t.Errorf("ParseAmount(%q) = %s, %q; want an error saying %q", tc.in, d, msg, tc.msg)
		case tc.msg == "" && FormatAmount(d) != tc.want:
			t.Errorf("ParseAmount(%q) = %s, want %s", tc.in, FormatAmount(d), tc.want)
		}
	}
}

// Amounts from JSON strings and JSON numbers add up exactly: no float is
// ever involved.
func TestAmountsAreExact(t *testing.T) {
	t.Parallel()
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(`["0.1", "0.2", 0.1, 0.000001, "-0.000001"]`), &raw); err != nil {
		t.Fatal(err)
	}
	sum, _ := ParseAmount("0")
	for _, r := range raw {
		d, msg := ParseAmountJSON(r)
		if msg != "" {
			t.Fatalf("%s: %s", r, msg)
		}
		sum = sum.Add(d)
	}
	if got := FormatAmount(sum); got != "0.400000" { // the sum keeps the most decimals of its terms
		t.Fatalf("0.1 + 0.2 + 0.1 + 0.000001 - 0.000001 = %s, want 0.400000", got)
	}
	for _, bad := range []string{`true`, `{}`, `[1]`, `null`, `"abc"`} {
		if _, msg := ParseAmountJSON(json.RawMessage(bad)); msg == "" {
			t.Errorf("ParseAmountJSON(%s) accepted", bad)
		}
	}
}

func TestCurrencies(t *testing.T) {
	t.Parallel()
	// 178 active ISO 4217 codes, less XTS (testing) and XXX (no currency).
	if n := len(currencies); n != 176 {
		t.Errorf("%d cost currencies, want 176", n)
	}
	for _, c := range []string{"USD", "EUR", "JPY", "CHF", "XAU", "XCG", "ZWG", "SLE"} {
		if _, ok := CurrencyName(c); !ok {
			t.Errorf("%s is not accepted", c)
		}
	}
	// Withdrawn codes, lookalikes, and the codes for testing and for no
	// currency are refused.
	for _, c := range []string{"HRK", "ANG", "SLL", "ZWL", "CUC", "BGN", "DEM", "ABC", "US", "USDT", "XTS", "XXX"} {
		if _, ok := CurrencyName(c); ok {
			t.Errorf("%s is accepted", c)
		}
	}
	if c, msg := parseCurrency(" usd "); c != "USD" || msg != "" {
		t.Errorf("parseCurrency(usd) = %q, %q", c, msg)
	}
}

func TestPeriodOf(t *testing.T) {
	t.Parallel()
	day := func(s string) time.Time {
		d, ok := ParseDate(s)
		if !ok {
			t.Fatalf("bad date %s", s)
		}
		return d
	}
	for _, tc := range []struct{ period, at, start, end string }{
		{Monthly, "2024-02-15", "2024-02-01", "2024-02-29"},
		{Monthly, "2023-12-31", "2023-12-01", "2023-12-31"},
		{Quarterly, "2024-05-20", "2024-04-01", "2024-06-30"},
		{Quarterly, "2024-12-31", "2024-10-01", "2024-12-31"},
		{Quarterly, "2024-01-01", "2024-01-01", "2024-03-31"},
		{Yearly, "2024-07-04", "2024-01-01", "2024-12-31"},
	} {
		start, end := PeriodOf(tc.period, day(tc.at))
		if !start.Equal(day(tc.start)) || !end.Equal(day(tc.end)) {
			t.Errorf("%s period of %s: %s..%s, want %s..%s", tc.period, tc.at,
				start.Format(DateLayout), end.Format(DateLayout), tc.start, tc.end)
		}
	}
	// The period is the UTC day's, whatever the caller's zone.
	late := time.Date(2024, 3, 31, 23, 30, 0, 0, time.FixedZone("UTC-2", -2*3600))
	if start, _ := PeriodOf(Monthly, late); start.Month() != time.April {
		t.Errorf("period of %s starts %s, want April (UTC)", late, start)
	}
}
