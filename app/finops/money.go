package finops

import (
	_ "embed"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/shopspring/decimal"
)

// Money is stored as numeric(20,6): exact, with six decimals, below 10^14 in
// magnitude. Nothing is ever rounded: an amount that does not fit is refused.
const (
	// AmountScale is the number of decimals every amount is kept and written
	// with.
	AmountScale = 6
	// amountDigits is the integer digits numeric(20,6) holds.
	amountDigits = 14
)

// maxAmount is the smallest magnitude numeric(20,6) cannot hold.
var maxAmount = decimal.New(1, amountDigits)

// decimalLiteral is what an amount may look like: a JSON number, or the same
// as a string, optionally with a leading plus sign. The exponent is bounded
// so that no literal makes the parser or the range check build huge numbers.
var decimalLiteral = regexp.MustCompile(`^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?$`)

// ParseAmount parses an exact decimal amount from text, without going
// through a float. It accepts at most AmountScale significant decimals
// (trailing zeros beyond them are fine) and magnitudes below 10^14; anything
// else is an error message for the client, never a rounded value.
func ParseAmount(s string) (decimal.Decimal, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return decimal.Decimal{}, "required"
	}
	if len(s) > 64 || !decimalLiteral.MatchString(s) {
		return decimal.Decimal{}, "must be a decimal number such as 12.34"
	}
	d, err := decimal.NewFromString(strings.TrimPrefix(s, "+"))
	if err != nil {
		return decimal.Decimal{}, "must be a decimal number such as 12.34"
	}
	if !d.Equal(d.Truncate(AmountScale)) {
		return decimal.Decimal{}, "must have at most 6 decimal places"
	}
	if d.Abs().Cmp(maxAmount) >= 0 {
		return decimal.Decimal{}, "must be below 100000000000000 in magnitude"
	}
	return d, ""
}

// ParseAmountJSON parses an amount given as a JSON string or a JSON number
// (raw, as json.RawMessage keeps it); see ParseAmount.
func ParseAmountJSON(raw json.RawMessage) (decimal.Decimal, string) {
	v := strings.TrimSpace(string(raw))
	switch {
	case v == "" || v == "null":
		return decimal.Decimal{}, "required"
	case v[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return decimal.Decimal{}, "must be a decimal number or a string holding one"
		}
		return ParseAmount(s)
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9'):
		return ParseAmount(v)
	}
	return decimal.Decimal{}, "must be a decimal number or a string holding one"
}

// FormatAmount writes d as clients see money: a plain decimal with exactly
// six decimals.
func FormatAmount(d decimal.Decimal) string { return d.StringFixed(AmountScale) }

// parseStoredAmount reads an amount PostgreSQL wrote as text. It cannot fail
// for numeric output; an error means the query is wrong.
func parseStoredAmount(s string) (decimal.Decimal, error) { return decimal.NewFromString(s) }

//go:embed currencies.txt
var currencyList string

// currencies holds the active ISO 4217 codes, from currencies.txt.
var currencies = func() map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(currencyList, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		code, name, _ := strings.Cut(line, "\t")
		m[code] = name
	}
	return m
}()

// CurrencyName returns the name of an active ISO 4217 currency code, and
// whether code is one.
func CurrencyName(code string) (string, bool) {
	name, ok := currencies[code]
	return name, ok
}

// parseCurrency normalises a currency code to upper case and checks that it
// is an active ISO 4217 code; the string is the client's error message.
func parseCurrency(s string) (string, string) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return "", "required"
	}
	if _, ok := currencies[s]; !ok {
		return "", "must be an active ISO 4217 currency code such as USD or EUR"
	}
	return s, ""
}
