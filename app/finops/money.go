package finops

import (
	_ "embed"
	"encoding/json"
	"strings"

	"github.com/shopspring/decimal"
)

// Money is stored as unconstrained numeric: exact, with as many decimals as
// it was given (billing exports carry eleven and more, such as
// 0.00000080000), and PostgreSQL keeps the scale it was written with.
// Nothing is ever rounded, on the way in or out.

// maxAmountLen bounds the text of an amount, so that no literal makes the
// parser or PostgreSQL build huge numbers.
const maxAmountLen = 64

// NormalizeDecimal checks that s is an exact decimal literal — optional
// sign, digits with an optional decimal point, an optional exponent of at
// most two digits, at most 64 characters, surrounding spaces ignored — and
// returns it in the form both PostgreSQL's numeric and JSON accept: no plus
// sign, no leading zeros, no bare decimal point (".5" is "0.5", "5." is
// "5"). The value and its scale are unchanged. It never goes through a float
// and allocates only when it has to rewrite s.
func NormalizeDecimal(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxAmountLen {
		return "", false
	}
	i, neg := 0, false
	switch s[0] {
	case '-':
		neg, i = true, 1
	case '+':
		i = 1
	}
	intStart := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intEnd := i
	fracStart, fracEnd := i, i
	if i < len(s) && s[i] == '.' {
		i++
		fracStart = i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		fracEnd = i
	}
	if intEnd == intStart && fracEnd == fracStart {
		return "", false // no digit at all
	}
	expStart := i
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		d := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == d || i-d > 2 {
			return "", false
		}
	}
	if i != len(s) {
		return "", false
	}
	// Leading zeros of the integer part go, keeping one.
	lead := intStart
	for lead < intEnd-1 && s[lead] == '0' {
		lead++
	}
	canonical := (s[0] != '+') && lead == intStart && intEnd > intStart &&
		(fracStart == intEnd || fracEnd > fracStart) // "5." and ".5" are not
	if canonical {
		return s, true
	}
	var b strings.Builder
	b.Grow(len(s) + 1)
	if neg {
		b.WriteByte('-')
	}
	if intEnd > lead {
		b.WriteString(s[lead:intEnd])
	} else {
		b.WriteByte('0')
	}
	if fracEnd > fracStart {
		b.WriteByte('.')
		b.WriteString(s[fracStart:fracEnd])
	}
	b.WriteString(s[expStart:])
	return b.String(), true
}

// ParseAmount parses an exact decimal amount from text, without going
// through a float: any number of decimals (NormalizeDecimal says what is a
// decimal). Anything else is an error message for the client, never a
// rounded value. The result keeps the scale it was written with.
func ParseAmount(s string) (decimal.Decimal, string) {
	if strings.TrimSpace(s) == "" {
		return decimal.Decimal{}, "required"
	}
	canon, ok := NormalizeDecimal(s)
	if !ok {
		return decimal.Decimal{}, "must be a decimal number such as 12.34 (at most 64 characters, no thousands separators)"
	}
	d, err := decimal.NewFromString(canon)
	if err != nil {
		return decimal.Decimal{}, "must be a decimal number such as 12.34 (at most 64 characters, no thousands separators)"
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

// FormatAmount writes d as clients see money: a plain decimal with the
// scale it was given or stored with — PostgreSQL's own text form of
// numeric — so "0.00000080000" stays "0.00000080000", and a sum has the
// largest scale of its terms.
func FormatAmount(d decimal.Decimal) string {
	if exp := d.Exponent(); exp < 0 {
		return d.StringFixed(-exp)
	}
	return d.String()
}

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
