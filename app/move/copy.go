package move

// The copy: one pass makes a target hold exactly the rows of a source, by
// comparing a hash of every row, keyed by primary key, table by table, and
// writing only the rows that differ. The first pass copies everything;
// later ones catch up with what the tenant wrote meanwhile.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// chunk is how many rows one statement fetches or writes.
const chunk = 1000

// table is a tenant table as the copy needs it.
type table struct {
	name  string
	ident string   // quoted
	pk    []string // quoted primary-key columns, tenant_id among them
	pkRaw []string
	cols  []string // quoted writable columns
}

// tablesOf lists the tenant tables of tx's first schema, those that
// reference others first (the order rows are deleted in).
func tablesOf(ctx context.Context, tx pgx.Tx) ([]table, error) {
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, err
	}
	names, err := isolation.TenantTablesInDeleteOrder(ctx, tx, schema)
	if err != nil {
		return nil, err
	}
	out := make([]table, 0, len(names))
	for _, name := range names {
		t := table{name: name, ident: pgx.Identifier{name}.Sanitize()}
		rows, err := tx.Query(ctx, `
			SELECT a.attname, coalesce(k.n, 0) FROM pg_attribute a
			LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
			LEFT JOIN LATERAL (SELECT n FROM unnest(i.indkey) WITH ORDINALITY AS u(attnum, n) WHERE u.attnum = a.attnum) k ON true
			WHERE a.attrelid = (quote_ident(current_schema()) || '.' || quote_ident($1))::regclass
			  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
			ORDER BY a.attnum`, name)
		if err != nil {
			return nil, err
		}
		type col struct {
			name string
			pk   int64
		}
		cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
			var c col
			return c, r.Scan(&c.name, &c.pk)
		})
		if err != nil {
			return nil, fmt.Errorf("columns of %s: %w", name, err)
		}
		var pk []col
		for _, c := range cols {
			t.cols = append(t.cols, pgx.Identifier{c.name}.Sanitize())
			if c.pk > 0 {
				pk = append(pk, c)
			}
		}
		slices.SortFunc(pk, func(a, b col) int { return int(a.pk - b.pk) })
		for _, c := range pk {
			t.pk = append(t.pk, pgx.Identifier{c.name}.Sanitize())
			t.pkRaw = append(t.pkRaw, c.name)
		}
		if len(t.pk) == 0 {
			return nil, fmt.Errorf("table %s has no primary key", name)
		}
		out = append(out, t)
	}
	return out, nil
}

// key is the JSON object of a row's primary key.
func (t table) key() string {
	parts := make([]string, 0, 2*len(t.pk))
	for i, c := range t.pk {
		parts = append(parts, "'"+strings.ReplaceAll(t.pkRaw[i], "'", "''")+"'", "r."+c)
	}
	return "jsonb_build_object(" + strings.Join(parts, ", ") + ")::text"
}

// hashes returns every row of tenant in t, by key, with the md5 of its
// JSON form: equal hashes, equal rows (the session's TimeZone is UTC on
// both sides, so timestamps print alike).
func hashes(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT `+t.key()+`, md5(to_jsonb(r)::text) FROM `+t.ident+` r WHERE tenant_id = $1`, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var k, h string
	_, err = pgx.ForEachRow(rows, []any{&k, &h}, func() error { out[k] = h; return nil })
	return out, err
}

// delta is what a target must change to equal a source, per table.
type delta struct {
	upsert map[string][]string // table → keys to copy
	remove map[string][]string // table → keys to delete
	n      int
}

// diff compares src and dst, tables in tenant-table order.
func diff(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID) (delta, error) {
	d := delta{upsert: map[string][]string{}, remove: map[string][]string{}}
	for _, t := range tables {
		s, err := hashes(ctx, src, t, tenant)
		if err != nil {
			return d, fmt.Errorf("read %s of the source: %w", t.name, err)
		}
		o, err := hashes(ctx, dst, t, tenant)
		if err != nil {
			return d, fmt.Errorf("read %s of the target: %w", t.name, err)
		}
		for k, h := range s {
			if o[k] != h {
				d.upsert[t.name] = append(d.upsert[t.name], k)
			}
		}
		for k := range o {
			if _, ok := s[k]; !ok {
				d.remove[t.name] = append(d.remove[t.name], k)
			}
		}
		d.n += len(d.upsert[t.name]) + len(d.remove[t.name])
	}
	return d, nil
}

// apply makes dst equal src for the rows of d: deletes first (referencing
// tables first), then the rows to copy (referenced tables first), with the
// foreign keys (DEFERRABLE on every tenant table) checked at commit.
func apply(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID, d delta) error {
	if d.n == 0 {
		return nil
	}
	if _, err := dst.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
		return err
	}
	for _, t := range tables {
		for keys := range slices.Chunk(d.remove[t.name], chunk) {
			if _, err := dst.Exec(ctx, `DELETE FROM `+t.ident+` r USING jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k
				WHERE r.tenant_id = $1 AND `+match(t, "r", "k"), tenant, "["+strings.Join(keys, ",")+"]"); err != nil {
				return fmt.Errorf("delete from %s: %w", t.name, err)
			}
		}
	}
	for _, t := range slices.Backward(tables) {
		set := make([]string, 0, len(t.cols))
		for _, c := range t.cols {
			if !slices.Contains(t.pk, c) {
				set = append(set, c+" = EXCLUDED."+c)
			}
		}
		upsert := `INSERT INTO ` + t.ident + ` (` + strings.Join(t.cols, ", ") + `)
			SELECT ` + strings.Join(t.cols, ", ") + ` FROM jsonb_populate_recordset(NULL::` + t.ident + `, $1::jsonb)
			ON CONFLICT (` + strings.Join(t.pk, ", ") + `) DO `
		if len(set) == 0 {
			upsert += `NOTHING`
		} else {
			upsert += `UPDATE SET ` + strings.Join(set, ", ")
		}
		for keys := range slices.Chunk(d.upsert[t.name], chunk) {
			rows, err := src.Query(ctx, `SELECT to_jsonb(r)::text FROM `+t.ident+` r
				JOIN jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k ON `+match(t, "r", "k")+`
				WHERE r.tenant_id = $1`, tenant, "["+strings.Join(keys, ",")+"]")
			if err != nil {
				return fmt.Errorf("read %s of the source: %w", t.name, err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("read %s of the source: %w", t.name, err)
			}
			if len(got) == 0 {
				continue
			}
			if _, err := dst.Exec(ctx, upsert, "["+strings.Join(got, ",")+"]"); err != nil {
				return fmt.Errorf("write %s: %w", t.name, err)
			}
		}
	}
	return nil
}

func match(t table, a, b string) string {
	conds := make([]string, len(t.pk))
	for i, c := range t.pk {
		conds[i] = a + "." + c + " = " + b + "." + c
	}
	return strings.Join(conds, " AND ")
}
