// Package archive writes one tenant's data to a file and restores it, in a
// format that knows nothing of isolation strategies: a tenant exported from
// shared tables can be imported into a schema or a database of its own, and
// the other way round.
//
// # Format (version 2)
//
// A file is UTF-8 JSON Lines. The first line is the header
//
//	{"format":"bulkhead-tenant-export","version":2}
//
// then one line per row, table by table, rows in primary-key order:
//
//	{"table":"accounts","row":{...the row's columns, without tenant_id...}}
//
// and the last line is the manifest:
//
//	{"manifest":{"tenant":{"slug":…,"name":…},"source_isolation":…,
//	 "tenant_version":…,"created_at":…,"tables":[{"name":…,"rows":…,"sha256":…}],
//	 "sha256":…}}
//
// A table's sha256 is that of its row lines (each with its newline); the
// manifest's sha256 is that of every byte before the manifest line. Values
// are PostgreSQL's own JSON forms (to_jsonb): numerics exact, with every
// decimal they were stored with, timestamps in UTC, jsonb columns (FOCUS
// tags and columns) as JSON. Rows carry no tenant_id: the importing
// tenant's is put in.
//
// Version 2 is version 1 with the columns of tenant schema version 3
// (FOCUS: cost_items' billing periods, categories, costs, tags and focus;
// budgets' provider and tag scopes; the cost_imports table) and amounts of
// any scale. It reads version 1 files as they are: the columns they lack
// are NULL, as in rows migrated in place.
package archive

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Format and Version identify the file format.
const (
	Format  = "bulkhead-tenant-export"
	Version = 2
	// MinVersion is the oldest format version this server reads.
	MinVersion = 1
)

// Audited actions.
const (
	ActionExport = "tenant.export"
	ActionImport = "tenant.import"
)

// Manifest describes an export.
type Manifest struct {
	Tenant struct {
		Slug string `json:"slug"`
		Name string `json:"name"`
	} `json:"tenant"`
	SourceIsolation string       `json:"source_isolation"`
	TenantVersion   int64        `json:"tenant_version"`
	CreatedAt       time.Time    `json:"created_at"`
	Tables          []TableEntry `json:"tables"`
	SHA256          string       `json:"sha256"`
}

// TableEntry is one table of an export.
type TableEntry struct {
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
	SHA256 string `json:"sha256"`
}

type header struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

type rowLine struct {
	Table string          `json:"table"`
	Row   json.RawMessage `json:"row"`
}

type manifestLine struct {
	Manifest *Manifest `json:"manifest"`
}

// Archiver exports and imports tenants. It is safe for concurrent use.
type Archiver struct {
	control  *control.Service
	strategy isolation.Runner
}

// New returns an Archiver running tenant work through strategy. Its
// transactions are never retried (not isolation.Retryable): export writes
// to its writer and import reads its file as they go.
func New(ctl *control.Service, strategy isolation.Runner) *Archiver {
	return &Archiver{control: ctl, strategy: strategy}
}

// Export writes every row of the tenant called slug to w, inside one
// transaction bound to it (a consistent snapshot), and returns the manifest.
func (a *Archiver) Export(ctx context.Context, slug string, w io.Writer) (Manifest, error) {
	t, err := a.control.Tenant(ctx, slug)
	if err != nil {
		return Manifest{}, fmt.Errorf("export %s: %w", slug, err)
	}
	if _, err := a.control.Audit(ctx, control.Event{Action: ActionExport, Tenants: []string{slug}}); err != nil {
		return Manifest{}, err
	}
	m := Manifest{SourceIsolation: t.Isolation, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	m.Tenant.Slug, m.Tenant.Name = t.Slug, t.Name
	all := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(w, all))
	if err := writeLine(bw, header{Format, Version}); err != nil {
		return Manifest{}, err
	}
	// One snapshot for every table, set in the transaction's BEGIN: the
	// move fence's statement there is a query, after which it is too late.
	snapshot := isolation.WithStatements(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`)
	err = a.strategy.Run(snapshot, t.Isolated(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
			return err
		}
		if m.TenantVersion, err = migrationVersion(ctx, tx); err != nil {
			return err
		}
		tables, err := isolation.TenantTables(ctx, tx)
		if err != nil {
			return err
		}
		for _, table := range tables {
			entry, err := exportTable(ctx, tx, t.ID, table, bw)
			if err != nil {
				return fmt.Errorf("export %s: %w", table, err)
			}
			m.Tables = append(m.Tables, entry)
		}
		return nil
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("export %s: %w", slug, err)
	}
	if err := bw.Flush(); err != nil {
		return Manifest{}, err
	}
	m.SHA256 = hex.EncodeToString(all.Sum(nil))
	b, err := json.Marshal(manifestLine{&m})
	if err != nil {
		return Manifest{}, err
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func exportTable(ctx context.Context, tx pgx.Tx, tenant any, table string, w io.Writer) (TableEntry, error) {
	order, err := primaryKeyOrder(ctx, tx, table)
	if err != nil {
		return TableEntry{}, err
	}
	rows, err := tx.Query(ctx, `SELECT (to_jsonb(t) - 'tenant_id')::text FROM `+pgx.Identifier{table}.Sanitize()+
		` t WHERE tenant_id = $1 ORDER BY `+order, tenant)
	if err != nil {
		return TableEntry{}, err
	}
	defer rows.Close()
	entry := TableEntry{Name: table}
	h := sha256.New()
	for rows.Next() {
		var row string
		if err := rows.Scan(&row); err != nil {
			return TableEntry{}, err
		}
		line, err := json.Marshal(rowLine{Table: table, Row: json.RawMessage(row)})
		if err != nil {
			return TableEntry{}, err
		}
		line = append(line, '\n')
		h.Write(line)
		if _, err := w.Write(line); err != nil {
			return TableEntry{}, err
		}
		entry.Rows++
	}
	entry.SHA256 = hex.EncodeToString(h.Sum(nil))
	return entry, rows.Err()
}

// primaryKeyOrder is the ORDER BY list of table's primary key columns,
// quoted, tenant_id left out.
func primaryKeyOrder(ctx context.Context, tx pgx.Tx, table string) (string, error) {
	rows, err := tx.Query(ctx, `
		SELECT a.attname FROM pg_index i
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = (quote_ident(current_schema()) || '.' || quote_ident($1))::regclass AND i.indisprimary
		ORDER BY k.n`, table)
	if err != nil {
		return "", err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	var order []byte
	for _, c := range cols {
		if c == "tenant_id" {
			continue
		}
		if len(order) > 0 {
			order = append(order, ", "...)
		}
		order = append(order, pgx.Identifier{c}.Sanitize()...)
	}
	if len(order) == 0 {
		return "", fmt.Errorf("table %s has no primary key besides tenant_id", table)
	}
	return string(order), nil
}

func migrationVersion(ctx context.Context, tx pgx.Tx) (int64, error) {
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return 0, err
	}
	return isolation.TenantVersion(ctx, tx, schema)
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// CorruptError is an export file that is not what its manifest says.
type CorruptError struct{ Reason string }

func (e *CorruptError) Error() string { return "corrupt export: " + e.Reason }

// Verify reads an export from r and checks it against its manifest: the
// header, every table's row count and checksum, and the whole file's
// checksum. It returns the manifest, or a *CorruptError.
func Verify(r io.Reader) (Manifest, error) {
	var m *Manifest
	err := scan(r, func(int, string, json.RawMessage) error { return nil }, &m)
	if err != nil {
		return Manifest{}, err
	}
	return *m, nil
}

// scan reads an export, calling row for each row line with its number (the
// header is line 1), and checks every checksum; *mp receives the manifest.
func scan(r io.Reader, row func(line int, table string, data json.RawMessage) error, mp **Manifest) error {
	br := bufio.NewReaderSize(r, 1<<16)
	all := sha256.New()
	type tableSum struct {
		rows int64
		h    interface {
			io.Writer
			Sum([]byte) []byte
		}
	}
	sums := map[string]*tableSum{}
	var order []string
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return &CorruptError{"the file ends before its manifest"}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		lineNo++
		if lineNo == 1 {
			var h header
			if json.Unmarshal(line, &h) != nil || h.Format != Format {
				return &CorruptError{"not a Bulkhead tenant export (no header)"}
			}
			if h.Version < MinVersion || h.Version > Version {
				return &CorruptError{fmt.Sprintf("format version %d; this server reads versions %d to %d", h.Version, MinVersion, Version)}
			}
			all.Write(line)
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"manifest":`)) {
			var ml manifestLine
			if err := json.Unmarshal(line, &ml); err != nil || ml.Manifest == nil {
				return &CorruptError{fmt.Sprintf("line %d: unreadable manifest", lineNo)}
			}
			m := ml.Manifest
			if got := hex.EncodeToString(all.Sum(nil)); got != m.SHA256 {
				return &CorruptError{fmt.Sprintf("the file's checksum is %s, the manifest says %s", got, m.SHA256)}
			}
			listed := map[string]bool{}
			for _, t := range m.Tables {
				listed[t.Name] = true
			}
			for _, name := range order {
				if !listed[name] {
					return &CorruptError{fmt.Sprintf("table %s is in the file but not in the manifest", name)}
				}
			}
			for _, t := range m.Tables {
				s, ok := sums[t.Name]
				switch {
				case !ok && t.Rows == 0:
					continue
				case !ok:
					return &CorruptError{fmt.Sprintf("table %s: no rows in the file, %d in the manifest", t.Name, t.Rows)}
				case s.rows != t.Rows:
					return &CorruptError{fmt.Sprintf("table %s: %d rows in the file, %d in the manifest", t.Name, s.rows, t.Rows)}
				case hex.EncodeToString(s.h.Sum(nil)) != t.SHA256:
					return &CorruptError{fmt.Sprintf("table %s: checksum mismatch", t.Name)}
				}
			}
			if _, err := br.Peek(1); !errors.Is(err, io.EOF) {
				return &CorruptError{"data after the manifest"}
			}
			*mp = m
			return nil
		}
		var rl rowLine
		if err := json.Unmarshal(line, &rl); err != nil || rl.Table == "" || len(rl.Row) == 0 || rl.Row[0] != '{' {
			return &CorruptError{fmt.Sprintf("line %d: not a row", lineNo)}
		}
		s, ok := sums[rl.Table]
		if !ok {
			s = &tableSum{h: sha256.New()}
			sums[rl.Table] = s
			order = append(order, rl.Table)
		}
		s.rows++
		s.h.Write(line)
		all.Write(line)
		if err := row(lineNo, rl.Table, rl.Row); err != nil {
			return err
		}
	}
}

// Checksums returns, for every tenant table, the row count and sha256 an
// export of tenant would carry in its manifest, read within tx (bound to
// tenant, its tables first on the search_path; a REPEATABLE READ or
// otherwise frozen transaction for a consistent answer). A mover compares
// them between a tenant's source and target.
func Checksums(ctx context.Context, tx pgx.Tx, tenant uuid.UUID) ([]TableEntry, error) {
	if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
		return nil, err
	}
	tables, err := isolation.TenantTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	out := make([]TableEntry, 0, len(tables))
	for _, table := range tables {
		entry, err := exportTable(ctx, tx, tenant, table, io.Discard)
		if err != nil {
			return nil, fmt.Errorf("checksum %s: %w", table, err)
		}
		out = append(out, entry)
	}
	return out, nil
}
