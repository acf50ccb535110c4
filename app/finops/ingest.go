package finops

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/internal/jsonkeys"

	"github.com/bulkheadhq/bulkhead/app/store"
)

// FormatError is a request body that is not well-formed JSON or CSV, or not
// shaped as a list of cost items; the client must fix its encoder, not its
// data.
type FormatError struct{ Msg string }

func (e *FormatError) Error() string { return e.Msg }

// CostColumns are the fields of a cost item, and the columns a CSV header
// must name (in any order).
var CostColumns = []string{"account_id", "service", "usage_date", "amount", "currency"}

// ReadCostsJSON reads a JSON array of cost items from r and parses every
// one. An item that names a key twice is a *FormatError naming it. Items
// that are not valid are reported together as
// *store.ValidationError values joined, each naming its item and field as
// "[3].amount"; a body that is not a well-formed JSON array is a
// *FormatError; more than MaxCostsPerIngest items is ErrTooManyCosts, found
// without reading further. Errors reading r are returned as they are.
// Amounts are read from JSON numbers or strings, never through a float.
func ReadCostsJSON(r io.Reader) ([]CostInput, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonFormatError(err)
	}
	if tok != json.Delim('[') {
		return nil, &FormatError{"body: must be a JSON array of cost items"}
	}
	var (
		items []CostInput
		errs  fieldErrors
	)
	for i := 0; dec.More(); i++ {
		if i == MaxCostsPerIngest {
			return nil, ErrTooManyCosts
		}
		row := fmt.Sprintf("[%d]", i)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, jsonFormatError(err)
		}
		var dup *jsonkeys.DuplicateError
		if err := jsonkeys.Unique(raw); errors.As(err, &dup) {
			return nil, &FormatError{fmt.Sprintf("body: duplicate key %q in %s%s", dup.Key, row, dup.Path)}
		} else if err != nil {
			return nil, jsonFormatError(err)
		}
		var obj map[string]json.RawMessage
		var typeErr *json.UnmarshalTypeError
		if err := json.Unmarshal(raw, &obj); errors.As(err, &typeErr) || (err == nil && obj == nil) {
			errs.add(row, "must be an object with the fields "+strings.Join(CostColumns, ", "))
			continue
		} else if err != nil {
			return nil, jsonFormatError(err)
		}
		items = append(items, parseCostObject(row, obj, &errs))
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, jsonFormatError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, jsonFormatError(err)
		}
		return nil, &FormatError{"body: unexpected data after the JSON array"}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return items, nil
}

// parseCostObject parses one cost item given as a JSON object, adding an
// error per bad field of row to errs: what the JSON ingest does with each
// item, and a tenant import with each cost row.
func parseCostObject(row string, obj map[string]json.RawMessage, errs *fieldErrors) CostInput {
	var f rawCost
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		v := obj[k]
		if k == "amount" {
			f.amountJSON, f.has[3] = v, true
			continue
		}
		i := slices.Index(CostColumns, k)
		if i < 0 {
			errs.add(row+"."+k, "unknown field")
			continue
		}
		f.has[i] = true
		if s := strings.TrimSpace(string(v)); s == "null" {
			f.has[i] = false
		} else if err := json.Unmarshal(v, &f.text[i]); err != nil {
			errs.add(row+"."+k, "must be a string")
			f.bad[i] = true
		}
	}
	return f.parse(row, errs)
}

// jsonFormatError words a decoding error; read errors pass through.
func jsonFormatError(err error) error {
	var syntax *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return &FormatError{"body: empty; a JSON array of cost items is required"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &FormatError{"body: truncated JSON"}
	case errors.As(err, &syntax):
		return &FormatError{fmt.Sprintf("body: malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())}
	}
	return err
}

// utf8BOM is the byte order mark spreadsheet programs put before UTF-8 CSV.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ReadCostsCSV reads cost items from CSV (RFC 4180: quoted fields, CRLF or
// LF line ends, and an optional UTF-8 byte order mark) whose first row names
// the columns CostColumns in any order. Rows are numbered as a spreadsheet
// shows them: the header is row 1. Invalid rows are reported together as
// *store.ValidationError values joined, each naming its row and column as
// "row 5.amount"; a header naming an unknown column, or missing one, is
// reported the same way under "header". Malformed CSV is a *FormatError;
// more than MaxCostsPerIngest rows is ErrTooManyCosts, found without reading
// further. Errors reading r are returned as they are.
func ReadCostsCSV(r io.Reader) ([]CostInput, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if b, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(b, utf8BOM) {
		br.Discard(len(utf8BOM)) // cannot fail: peeked
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errorsOf("header", "missing: the first row must name the columns "+strings.Join(CostColumns, ","))
	} else if err != nil {
		return nil, csvError(err)
	}
	var errs fieldErrors
	var cols [5]int // CostColumns[i] is in column cols[i]-1; 0: absent
	for j, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		i := slices.Index(CostColumns, name)
		switch {
		case i < 0:
			errs.add("header", fmt.Sprintf("unknown column %q; the columns are %s", name, strings.Join(CostColumns, ",")))
		case cols[i] != 0:
			errs.add("header", fmt.Sprintf("column %q appears twice", name))
		default:
			cols[i] = j + 1
		}
	}
	for i, c := range cols {
		if c == 0 {
			errs.add("header", fmt.Sprintf("missing column %q", CostColumns[i]))
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	var items []CostInput
	for n := 2; ; n++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if n-1 > MaxCostsPerIngest {
			return nil, ErrTooManyCosts
		}
		row := fmt.Sprintf("row %d", n)
		if errors.Is(err, csv.ErrFieldCount) {
			errs.add(row, fmt.Sprintf("has %d fields, the header has %d", len(rec), len(header)))
			continue
		} else if err != nil {
			return nil, csvError(err)
		}
		var f rawCost
		for i, c := range cols {
			f.text[i], f.has[i] = rec[c-1], true
		}
		items = append(items, f.parse(row, &errs))
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return items, nil
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &FormatError{fmt.Sprintf("body: malformed CSV at line %d, column %d: %v", pe.Line, pe.Column, pe.Err)}
	}
	return err
}

func errorsOf(field, msg string) error {
	var errs fieldErrors
	errs.add(field, msg)
	return errs.err()
}

// rawCost is one item's fields as text, indexed like CostColumns, before
// parsing. A JSON amount keeps its raw form, number or string.
type rawCost struct {
	text       [5]string
	has, bad   [5]bool
	amountJSON json.RawMessage
}

// parse parses f, adding an error per bad field of row to errs.
func (f *rawCost) parse(row string, errs *fieldErrors) CostInput {
	c := CostInput{Row: row}
	field := func(i int, parse func(string) string) {
		switch {
		case f.bad[i]:
		case !f.has[i]:
			errs.add(row+"."+CostColumns[i], "required")
		default:
			if msg := parse(f.text[i]); msg != "" {
				errs.add(row+"."+CostColumns[i], msg)
			}
		}
	}
	field(0, func(s string) string {
		id, err := uuid.Parse(strings.TrimSpace(s))
		if err != nil || id == uuid.Nil {
			return "must be the id (a UUID) of one of your accounts"
		}
		c.AccountID = id
		return ""
	})
	field(1, func(s string) string {
		c.Service = strings.TrimSpace(s)
		return store.CheckText(c.Service)
	})
	field(2, func(s string) string {
		d, ok := ParseDate(s)
		if !ok {
			return "must be a date that exists, written YYYY-MM-DD"
		}
		if d.Before(MinUsageDate) {
			return "must be " + MinUsageDate.Format(DateLayout) + " or later"
		}
		c.UsageDate = d
		return ""
	})
	field(3, func(s string) (msg string) {
		if f.amountJSON != nil {
			c.Amount, msg = ParseAmountJSON(f.amountJSON)
		} else {
			c.Amount, msg = ParseAmount(s)
		}
		return msg
	})
	field(4, func(s string) (msg string) {
		c.Currency, msg = parseCurrency(s)
		return msg
	})
	return c
}
