package finops

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// A FOCUS dataset is read row by row from a FOCUSSource, checked against
// the specification's formats, and turned into the rows cost_items stores
// (CostRow). Nothing holds more than the current row.

// cell is one value of a row. raw marks a value that is JSON already (a
// Parquet number, boolean, map or list), kept as such among the custom
// columns; CSV cells are always text.
type cell struct {
	s    string
	null bool
	raw  bool
}

// FOCUSSource is a FOCUS dataset being read, row by row: made by
// NewCSVSource, NewParquetSource or SpoolParquet, read by ImportCosts. It
// is not safe for concurrent use.
type FOCUSSource interface {
	// columns names the dataset's columns, in the order of the cells next
	// returns.
	columns() []string
	// next returns the next row's cells and the row's name for errors
	// ("row 5"); io.EOF after the last. A row of the wrong shape is a
	// *store.ValidationError (the caller may go on); anything else ends
	// the read. The cells are valid until the next call.
	next() ([]cell, string, error)
	// format is "csv" or "parquet".
	format() string
}

// csvSource reads a FOCUS dataset from CSV.
type csvSource struct {
	r      *csv.Reader
	header []string
	cells  []cell
	line   int
}

// NewCSVSource returns a source reading CSV from r (RFC 4180, optional
// UTF-8 byte order mark) whose first row is the header. A header that is
// not a FOCUS dataset's is a *store.ValidationError for "header"; malformed
// CSV is a *FormatError.
func NewCSVSource(r io.Reader) (FOCUSSource, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	if b, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(b, utf8BOM) {
		br.Discard(len(utf8BOM)) // cannot fail: peeked
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errorsOf("header", "missing: the first row must name the columns of a FOCUS dataset")
	} else if err != nil {
		return nil, csvError(err)
	}
	header = append([]string(nil), header...) // ReuseRecord: the next read reuses it
	if !IsFOCUSHeader(header) {
		return nil, errorsOf("header", "not a FOCUS dataset: BilledCost, BillingCurrency and ChargePeriodStart are required columns")
	}
	return &csvSource{r: cr, header: header, cells: make([]cell, len(header)), line: 1}, nil
}

func (s *csvSource) columns() []string { return s.header }

// isHeader reports whether rec repeats the header.
func (s *csvSource) isHeader(rec []string) bool {
	if len(rec) != len(s.header) || len(rec) == 0 || cleanHeader(rec[0]) != cleanHeader(s.header[0]) {
		return false
	}
	for i, v := range rec {
		if cleanHeader(v) != cleanHeader(s.header[i]) {
			return false
		}
	}
	return true
}
func (s *csvSource) format() string { return "csv" }

func (s *csvSource) next() ([]cell, string, error) {
	rec, err := s.r.Read()
	if errors.Is(err, io.EOF) {
		return nil, "", io.EOF
	}
	s.line++
	// Exports come in parts, each with its header: parts sent one after
	// the other (cat part-*.csv, or their gzip members) are one dataset.
	for err == nil && s.isHeader(rec) {
		if rec, err = s.r.Read(); errors.Is(err, io.EOF) {
			return nil, "", io.EOF
		}
		s.line++
	}
	row := "row " + strconv.Itoa(s.line)
	if errors.Is(err, csv.ErrFieldCount) {
		return nil, row, errorsOf(row, fmt.Sprintf("has %d fields, the header has %d", len(rec), len(s.header)))
	} else if err != nil {
		return nil, row, csvError(err)
	}
	for i, v := range rec {
		s.cells[i] = cell{s: v, null: isNull(v)}
	}
	return s.cells, row, nil
}

// ReadHeader reads the first CSV record of r, for telling a FOCUS dataset
// from the five-column format. It returns the header (nil when r does not
// start with one the CSV reader understands) and a reader that yields r
// from its start again; r is read no further than 64 KiB.
func ReadHeader(r io.Reader) ([]string, io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	b, err := br.Peek(64 << 10)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, br, err
	}
	end, quoted := len(b), false
	for i, c := range b {
		if c == '"' {
			quoted = !quoted
		} else if c == '\n' && !quoted {
			end = i + 1
			break
		}
	}
	rec, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b[:end], utf8BOM))).Read()
	if err != nil {
		return nil, br, nil // the full reader says why
	}
	return rec, br, nil
}

// parquetSource reads a FOCUS dataset from Parquet. Parquet keeps its
// schema at the end of the file, so it reads from an io.ReaderAt (the
// body, spooled to a temporary file), one row group at a time.
type parquetSource struct {
	file   *parquet.File
	fields []parquetField
	groups []parquet.RowGroup
	rows   parquet.Rows
	buf    []parquet.Row
	n, at  int
	cells  []cell
	count  int64
	names  []string
}

// parquetField is one top-level field of the schema: a leaf column, or a
// group (map, list, struct) spanning several leaf columns, kept as JSON.
type parquetField struct {
	name       string
	node       parquet.Node
	first, end int // leaf columns [first, end)
	leaf       bool
	sub        *parquet.Schema // groups: the field alone, to rebuild its value
}

// NewParquetSource returns a source reading the Parquet file r of size
// bytes. A file whose columns are not a FOCUS dataset's is a
// *store.ValidationError for "header"; a file that is not Parquet is a
// *FormatError.
func NewParquetSource(r io.ReaderAt, size int64) (FOCUSSource, error) {
	f, err := parquet.OpenFile(r, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, &FormatError{"body: not a readable Parquet file: " + err.Error()}
	}
	s := &parquetSource{file: f, groups: f.RowGroups()}
	leaf := 0
	for _, fld := range f.Schema().Fields() {
		n := leafCount(fld)
		pf := parquetField{name: fld.Name(), node: fld, first: leaf, end: leaf + n, leaf: fld.Leaf()}
		if !pf.leaf || fld.Repeated() {
			pf.leaf = false
			pf.sub = parquet.NewSchema("row", parquet.Group{fld.Name(): fld})
		}
		s.fields = append(s.fields, pf)
		s.names = append(s.names, fld.Name())
		leaf += n
	}
	if !IsFOCUSHeader(s.names) {
		return nil, errorsOf("header", "not a FOCUS dataset: BilledCost, BillingCurrency and ChargePeriodStart are required columns")
	}
	s.cells = make([]cell, len(s.fields))
	s.buf = make([]parquet.Row, 64)
	return s, nil
}

func leafCount(n parquet.Node) int {
	if n.Leaf() {
		return 1
	}
	c := 0
	for _, f := range n.Fields() {
		c += leafCount(f)
	}
	return c
}

func (s *parquetSource) columns() []string { return s.names }
func (s *parquetSource) format() string    { return "parquet" }

func (s *parquetSource) next() ([]cell, string, error) {
	for s.at >= s.n {
		if s.rows == nil {
			if len(s.groups) == 0 {
				return nil, "", io.EOF
			}
			s.rows, s.groups = s.groups[0].Rows(), s.groups[1:]
		}
		n, err := s.rows.ReadRows(s.buf)
		s.n, s.at = n, 0
		if errors.Is(err, io.EOF) {
			s.rows.Close()
			s.rows = nil
		} else if err != nil {
			return nil, "", &FormatError{"body: unreadable Parquet data: " + err.Error()}
		}
	}
	row := s.buf[s.at]
	s.at++
	s.count++
	name := "row " + strconv.FormatInt(s.count, 10)
	// A row's values come column by column, in leaf order.
	v := 0
	for i, f := range s.fields {
		start := v
		for v < len(row) && row[v].Column() < f.end {
			v++
		}
		vals := row[start:v]
		c, err := f.cell(vals)
		if err != nil {
			return nil, name, errorsOf(name+"."+f.name, err.Error())
		}
		s.cells[i] = c
	}
	return s.cells, name, nil
}

// cell converts the values of one field of a row.
func (f *parquetField) cell(vals []parquet.Value) (cell, error) {
	if len(vals) == 0 {
		return cell{null: true}, nil
	}
	if f.leaf {
		return leafCell(f.node, vals[0])
	}
	if len(vals) == 1 && vals[0].IsNull() && vals[0].DefinitionLevel() == 0 {
		return cell{null: true}, nil
	}
	// A group: rebuilt with the library, on a schema holding it alone.
	sub := make(parquet.Row, len(vals))
	for i, v := range vals {
		sub[i] = v.Level(v.RepetitionLevel(), v.DefinitionLevel(), v.Column()-f.first)
	}
	m := map[string]any{}
	if err := reconstruct(f.sub, &m, sub); err != nil {
		return cell{}, fmt.Errorf("unreadable nested value: %v", err)
	}
	b, err := json.Marshal(jsonable(m[f.name]))
	if err != nil {
		return cell{}, fmt.Errorf("unreadable nested value: %v", err)
	}
	if string(b) == "null" {
		return cell{null: true}, nil
	}
	return cell{s: string(b), raw: true}, nil
}

// reconstruct is Schema.Reconstruct, with a panic (a file the library
// cannot make sense of) an error.
func reconstruct(schema *parquet.Schema, v any, row parquet.Row) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return schema.Reconstruct(v, row)
}

// jsonable turns what Reconstruct builds into values encoding/json writes
// as JSON: byte slices are text.
func jsonable(v any) any {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	}
	return v
}

// leafCell converts one Parquet value by its column's logical type: exact
// decimals from DECIMAL (any physical type), times from TIMESTAMP and
// INT96, dates, text; a float is written with the fewest digits that read
// back as the same float, which is all a float holds.
func leafCell(n parquet.Node, v parquet.Value) (cell, error) {
	if v.IsNull() {
		return cell{null: true}, nil
	}
	t := n.Type()
	lt := t.LogicalType()
	var lv format.LogicalTypeValue
	if lt != nil {
		lv = lt.Value
	}
	if d, ok := lv.(*format.DecimalType); ok {
		var unscaled *big.Int
		switch v.Kind() {
		case parquet.Int32:
			unscaled = big.NewInt(int64(v.Int32()))
		case parquet.Int64:
			unscaled = big.NewInt(v.Int64())
		case parquet.ByteArray, parquet.FixedLenByteArray:
			unscaled = twosComplement(v.ByteArray())
		default:
			return cell{}, fmt.Errorf("a DECIMAL stored as %s", v.Kind())
		}
		return cell{s: scaledDecimal(unscaled, int(d.Scale)), raw: true}, nil
	}
	switch v.Kind() {
	case parquet.Boolean:
		return cell{s: strconv.FormatBool(v.Boolean()), raw: true}, nil
	case parquet.Int32:
		if _, ok := lv.(*format.DateType); ok {
			return cell{s: time.Unix(int64(v.Int32())*86400, 0).UTC().Format(time.DateOnly)}, nil
		}
		return cell{s: strconv.FormatInt(int64(v.Int32()), 10), raw: true}, nil
	case parquet.Int64:
		if ts, ok := lv.(*format.TimestampType); ok {
			unit := time.Microsecond
			if ts.Unit.Value != nil {
				unit = ts.Unit.Value.Duration()
			}
			return cell{s: timeOfUnits(v.Int64(), unit).Format(time.RFC3339Nano)}, nil
		}
		if ct := t.ConvertedType(); ct != nil {
			switch *ct {
			case 9: // TIMESTAMP_MILLIS
				return cell{s: timeOfUnits(v.Int64(), time.Millisecond).Format(time.RFC3339Nano)}, nil
			case 10: // TIMESTAMP_MICROS
				return cell{s: timeOfUnits(v.Int64(), time.Microsecond).Format(time.RFC3339Nano)}, nil
			}
		}
		return cell{s: strconv.FormatInt(v.Int64(), 10), raw: true}, nil
	case parquet.Int96:
		// The legacy timestamp: nanoseconds of the day, then the Julian day.
		i := v.Int96()
		nanos := int64(i[1])<<32 | int64(i[0])
		day := int64(i[2]) - 2440588 // the Unix epoch's Julian day
		return cell{s: time.Unix(day*86400, nanos).UTC().Format(time.RFC3339Nano)}, nil
	case parquet.Float:
		f := float64(v.Float())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return cell{}, errors.New("must be a finite number")
		}
		return cell{s: strconv.FormatFloat(f, 'f', -1, 32), raw: true}, nil
	case parquet.Double:
		f := v.Double()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return cell{}, errors.New("must be a finite number")
		}
		return cell{s: strconv.FormatFloat(f, 'f', -1, 64), raw: true}, nil
	case parquet.ByteArray, parquet.FixedLenByteArray:
		b := v.ByteArray()
		if _, ok := lv.(*format.JsonType); ok && json.Valid(b) {
			return cell{s: string(b), raw: true}, nil
		}
		return cell{s: string(b), null: isNull(string(b))}, nil
	}
	return cell{}, fmt.Errorf("unsupported Parquet type %s", v.Kind())
}

func timeOfUnits(n int64, unit time.Duration) time.Time {
	switch unit {
	case time.Millisecond:
		return time.UnixMilli(n).UTC()
	case time.Microsecond:
		return time.UnixMicro(n).UTC()
	}
	return time.Unix(0, n).UTC()
}

// twosComplement reads a big-endian two's complement integer.
func twosComplement(b []byte) *big.Int {
	n := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(len(b)*8)))
	}
	return n
}

// scaledDecimal writes unscaled × 10^-scale as an exact decimal with scale
// decimals.
func scaledDecimal(unscaled *big.Int, scale int) string {
	s := unscaled.String()
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	} else if scale < 0 {
		s += strings.Repeat("0", -scale)
	}
	if neg {
		s = "-" + s
	}
	return s
}

// appendJSONString appends s to b as a JSON string. s is valid UTF-8
// without NUL (checked before).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// checkJSONObject checks a JSON object as PostgreSQL's jsonb takes it:
// well-formed, an object, no \u0000 (jsonb cannot hold it).
func checkJSONObject(s string) string {
	t := strings.TrimSpace(s)
	switch {
	case t == "" || t[0] != '{':
		return "must be a JSON object"
	case !utf8.ValidString(t) || !json.Valid([]byte(t)):
		return "must be a JSON object (well-formed JSON)"
	case strings.Contains(t, `\u0000`):
		return "must not contain \\u0000"
	case len(t) > maxFOCUSText:
		return "must be at most 65536 bytes"
	}
	return ""
}

// NumRows is the number of rows of the Parquet file, known from its footer.
func (s *parquetSource) NumRows() int64 { return s.file.NumRows() }
