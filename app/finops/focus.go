package finops

import (
	"strings"
	"time"
	"unicode/utf8"
)

// FOCUS (the FinOps Open Cost and Usage Specification) is the format cloud
// billing exports come in: AWS Data Exports, Azure Cost Management and
// Google Cloud billing write it, as CSV (often gzipped) or Parquet. This
// file knows its columns, versions 1.0 to 1.2 and the names that came
// before and after them; focusread.go reads datasets.

// focusKind is how a FOCUS column's values are checked and kept.
type focusKind uint8

const (
	// kindText is a string, kept as given.
	kindText focusKind = iota
	// kindDecimal is a numeric value (NumericFormat): an exact decimal.
	kindDecimal
	// kindDateTime is an ISO 8601 date/time, stored in UTC.
	kindDateTime
	// kindJSON is a JSON object (KeyValueFormat, JSON object format).
	kindJSON
	// kindCurrency is an ISO 4217 code.
	kindCurrency
)

// focusColumn is one column of the FOCUS cost and usage dataset.
type focusColumn struct {
	// Name is the column id, as the specification spells it.
	Name string
	Kind focusKind
	// Since is the version that introduced the column.
	Since string
}

// focusColumns are the columns of FOCUS 1.0, 1.1 and 1.2, and those 1.3
// added beside them (an export of a later version still loads; its newer
// columns are kept like any other). Column ids are from the specification's
// column definitions; kinds from their "Data type" constraint.
var focusColumns = []focusColumn{
	{"AvailabilityZone", kindText, "1.0"},
	{"BilledCost", kindDecimal, "1.0"},
	{"BillingAccountId", kindText, "1.0"},
	{"BillingAccountName", kindText, "1.0"},
	{"BillingAccountType", kindText, "1.2"},
	{"BillingCurrency", kindCurrency, "1.0"},
	{"BillingPeriodEnd", kindDateTime, "1.0"},
	{"BillingPeriodStart", kindDateTime, "1.0"},
	{"CapacityReservationId", kindText, "1.1"},
	{"CapacityReservationStatus", kindText, "1.1"},
	{"ChargeCategory", kindText, "1.0"},
	{"ChargeClass", kindText, "1.0"},
	{"ChargeDescription", kindText, "1.0"},
	{"ChargeFrequency", kindText, "1.0"},
	{"ChargePeriodEnd", kindDateTime, "1.0"},
	{"ChargePeriodStart", kindDateTime, "1.0"},
	{"CommitmentDiscountCategory", kindText, "1.0"},
	{"CommitmentDiscountId", kindText, "1.0"},
	{"CommitmentDiscountName", kindText, "1.0"},
	{"CommitmentDiscountQuantity", kindDecimal, "1.1"},
	{"CommitmentDiscountStatus", kindText, "1.0"},
	{"CommitmentDiscountType", kindText, "1.0"},
	{"CommitmentDiscountUnit", kindText, "1.1"},
	{"ConsumedQuantity", kindDecimal, "1.0"},
	{"ConsumedUnit", kindText, "1.0"},
	{"ContractedCost", kindDecimal, "1.0"},
	{"ContractedUnitPrice", kindDecimal, "1.0"},
	{"EffectiveCost", kindDecimal, "1.0"},
	{"InvoiceId", kindText, "1.2"},
	{"InvoiceIssuerName", kindText, "1.0"},
	{"ListCost", kindDecimal, "1.0"},
	{"ListUnitPrice", kindDecimal, "1.0"},
	{"PricingCategory", kindText, "1.0"},
	{"PricingCurrency", kindText, "1.2"}, // may be a virtual currency: not ISO 4217
	{"PricingCurrencyContractedUnitPrice", kindDecimal, "1.2"},
	{"PricingCurrencyEffectiveCost", kindDecimal, "1.2"},
	{"PricingCurrencyListUnitPrice", kindDecimal, "1.2"},
	{"PricingQuantity", kindDecimal, "1.0"},
	{"PricingUnit", kindText, "1.0"},
	{"ProviderName", kindText, "1.0"},
	{"PublisherName", kindText, "1.0"},
	{"RegionId", kindText, "1.0"},
	{"RegionName", kindText, "1.0"},
	{"ResourceId", kindText, "1.0"},
	{"ResourceName", kindText, "1.0"},
	{"ResourceType", kindText, "1.0"},
	{"ServiceCategory", kindText, "1.0"},
	{"ServiceName", kindText, "1.0"},
	{"ServiceSubcategory", kindText, "1.1"},
	{"SkuId", kindText, "1.0"},
	{"SkuMeter", kindText, "1.1"},
	{"SkuPriceDetails", kindJSON, "1.1"},
	{"SkuPriceId", kindText, "1.0"},
	{"SubAccountId", kindText, "1.0"},
	{"SubAccountName", kindText, "1.0"},
	{"SubAccountType", kindText, "1.2"},
	{"Tags", kindJSON, "1.0"},
	// 1.3: ProviderName and PublisherName are deprecated for these.
	{"ServiceProviderName", kindText, "1.3"},
	{"HostProviderName", kindText, "1.3"},
}

// focusAliases are column ids of earlier versions and the column that
// replaced them; a dataset using an old id loads into the new column (when
// it does not also have the new one).
var focusAliases = map[string]string{
	"AmortizedCost": "EffectiveCost",    // 0.5, renamed in 1.0-preview
	"ChargeType":    "ChargeCategory",   // 0.5, renamed in 1.0-preview
	"UsageQuantity": "ConsumedQuantity", // 1.0-preview, renamed in 1.0
	"UsageUnit":     "ConsumedUnit",     // 1.0-preview, renamed in 1.0
	"Region":        "RegionId",         // 0.5, renamed in 1.0
}

// columnKey folds a header name for matching: case, underscores, spaces
// and hyphens do not matter, so billed_cost and BILLEDCOST are BilledCost
// and InvoiceID is InvoiceId. Custom columns keep their x_ prefix apart:
// x_BilledCost is not BilledCost.
func columnKey(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_' && i == 1 && (name[0] == 'x' || name[0] == 'X'):
			b.WriteByte('_') // the custom-column prefix stays
		case c == '_' || c == ' ' || c == '-':
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// focusByKey finds a FOCUS column (or an old id of one) by its columnKey.
var focusByKey = func() map[string]int {
	m := make(map[string]int, len(focusColumns)+len(focusAliases))
	index := map[string]int{}
	for i, c := range focusColumns {
		m[columnKey(c.Name)] = i
		index[c.Name] = i
	}
	for old, now := range focusAliases {
		m[columnKey(old)] = index[now]
	}
	return m
}()

// focusColumnIndex returns the index in focusColumns of the FOCUS column
// named name, whether name is an old id, and whether it is one at all.
func focusColumnIndex(name string) (i int, alias, ok bool) {
	i, ok = focusByKey[columnKey(name)]
	if !ok {
		return 0, false, false
	}
	return i, !strings.EqualFold(strings.ReplaceAll(name, "_", ""), focusColumns[i].Name), true
}

// focusRequired are the columns a header must have for the body to be read
// as a FOCUS dataset.
var focusRequired = []string{"BilledCost", "BillingCurrency", "ChargePeriodStart"}

// IsFOCUSHeader reports whether header names the columns of a FOCUS cost
// and usage dataset (at least BilledCost, BillingCurrency and
// ChargePeriodStart, in any case or order).
func IsFOCUSHeader(header []string) bool {
	have := map[int]bool{}
	for _, h := range header {
		if i, _, ok := focusColumnIndex(cleanHeader(h)); ok {
			have[i] = true
		}
	}
	for _, name := range focusRequired {
		i, _, _ := focusColumnIndex(name)
		if !have[i] {
			return false
		}
	}
	return true
}

// cleanHeader trims a header cell: spaces and a byte order mark.
func cleanHeader(h string) string {
	return strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
}

// isNull reports whether a cell means "no value": empty, or the literal
// NULL some tools write (FOCUS's NullHandling asks for null, not for empty
// strings; exports differ).
func isNull(s string) bool {
	switch len(s) {
	case 0:
		return true
	case 4:
		return s == "NULL" || s == "null" || s == "Null"
	}
	return strings.TrimSpace(s) == ""
}

// ParseFOCUSDateTime parses the ISO 8601 date/times billing exports write:
// "2024-09-01T00:00:00Z" as FOCUS asks, but also without the T or the Z
// ("2024-09-01 00:00:00"), with fractional seconds (up to nanoseconds),
// with an offset (+00:00, +0000, +00), with BigQuery's " UTC", with
// minutes only, or a bare date. A time without a zone is UTC, as FOCUS
// requires every date/time to be. It returns the instant in UTC.
func ParseFOCUSDateTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	num := func(s string) (int, bool) {
		n := 0
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return 0, false
			}
			n = n*10 + int(s[i]-'0')
		}
		return n, len(s) > 0
	}
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return time.Time{}, false
	}
	y, ok1 := num(s[0:4])
	mo, ok2 := num(s[5:7])
	d, ok3 := num(s[8:10])
	if !ok1 || !ok2 || !ok3 || mo < 1 || mo > 12 || d < 1 || d > 31 {
		return time.Time{}, false
	}
	rest := s[10:]
	var h, mi, sec, nsec int
	if rest != "" {
		if rest[0] != 'T' && rest[0] != 't' && rest[0] != ' ' {
			return time.Time{}, false
		}
		rest = rest[1:]
		if len(rest) < 5 || rest[2] != ':' {
			return time.Time{}, false
		}
		var ok bool
		if h, ok = num(rest[0:2]); !ok || h > 23 {
			return time.Time{}, false
		}
		if mi, ok = num(rest[3:5]); !ok || mi > 59 {
			return time.Time{}, false
		}
		rest = rest[5:]
		if len(rest) >= 3 && rest[0] == ':' {
			if sec, ok = num(rest[1:3]); !ok || sec > 60 {
				return time.Time{}, false
			}
			rest = rest[3:]
			if len(rest) > 1 && (rest[0] == '.' || rest[0] == ',') {
				j := 1
				for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
					j++
				}
				frac := rest[1:j]
				if frac == "" || len(frac) > 9 {
					return time.Time{}, false
				}
				n, _ := num(frac)
				for k := len(frac); k < 9; k++ {
					n *= 10
				}
				nsec, rest = n, rest[j:]
			}
		}
	}
	offset := 0
	switch zone := strings.TrimSpace(rest); zone {
	case "", "Z", "z", "UTC", "+00:00", "-00:00", "+0000", "+00":
	default:
		if len(zone) < 3 || (zone[0] != '+' && zone[0] != '-') {
			return time.Time{}, false
		}
		digits := strings.ReplaceAll(zone[1:], ":", "")
		if len(digits) != 2 && len(digits) != 4 {
			return time.Time{}, false
		}
		oh, ok := num(digits[:2])
		om := 0
		if len(digits) == 4 {
			om, ok = num(digits[2:])
		}
		if !ok || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = oh*3600 + om*60
		if zone[0] == '-' {
			offset = -offset
		}
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, nsec, time.UTC)
	if t.Day() != d { // 30 February
		return time.Time{}, false
	}
	return t.Add(-time.Duration(offset) * time.Second), true
}

// checkFOCUSText checks a FOCUS string value: valid UTF-8 that PostgreSQL
// can store (no NUL), at most maxFOCUSText bytes.
func checkFOCUSText(s string) string {
	switch {
	case len(s) > maxFOCUSText:
		return "must be at most 65536 bytes"
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain NUL characters"
	}
	return ""
}

// maxFOCUSText bounds one cell of a FOCUS dataset.
const maxFOCUSText = 64 << 10

// NormalizeProvider turns a FOCUS provider name into an account's provider:
// AWS, Microsoft (Azure) and Google Cloud under the names accounts created
// through the API use (aws, azure, gcp), any other provider lower-cased
// ("Oracle" is "oracle").
func NormalizeProvider(name string) string {
	n := strings.ToLower(strings.Join(strings.Fields(name), " "))
	switch n {
	case "aws", "amazon", "amazon web services", "amazon web services, inc.":
		return "aws"
	case "azure", "microsoft", "microsoft azure", "microsoft corporation":
		return "azure"
	case "gcp", "google", "google cloud", "google cloud platform":
		return "gcp"
	}
	return n
}
