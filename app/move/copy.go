package move

// The copy: one pass makes a target hold exactly the rows of a source, by
// comparing a hash of every row, keyed by primary key, table by table, and
// writing only the rows that differ. The first pass copies everything;
// later ones catch up with what the tenant wrote meanwhile.
//
// The cut-over (since) relies on a pass instead of repeating one: the rows
// it copies are those written since the pass's snapshot, by transaction id,
// and the rows deleted since are found by count; the pass itself is checked
// by sums, computed by each database over its rows.

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	rows, err := tx.Query(ctx, `SELECT `+t.key()+`, `+rowHash+` FROM `+t.ident+` r WHERE tenant_id = $1`, tenant)
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
		if err := remove(ctx, dst, t, tenant, d.remove[t.name]); err != nil {
			return err
		}
	}
	for _, t := range slices.Backward(tables) {
		upsert := upsertSQL(t)
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

// rowHash is the SQL of the hash of a row r: the md5 of its JSON form,
// equal on both sides for equal rows (the session's TimeZone is UTC, and
// jsonb orders its keys).
const rowHash = `md5(to_jsonb(r)::text)`

// upsertSQL is the statement that writes the rows of its $1 (a JSON array
// of rows of t) into t, replacing those with the same primary key.
func upsertSQL(t table) string {
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
		return upsert + `NOTHING`
	}
	return upsert + `UPDATE SET ` + strings.Join(set, ", ")
}

// remove deletes the rows of tenant in t whose keys are keys.
func remove(ctx context.Context, dst pgx.Tx, t table, tenant uuid.UUID, keys []string) error {
	for keys := range slices.Chunk(keys, chunk) {
		if _, err := dst.Exec(ctx, `DELETE FROM `+t.ident+` r USING jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k
			WHERE r.tenant_id = $1 AND `+match(t, "r", "k"), tenant, "["+strings.Join(keys, ",")+"]"); err != nil {
			return fmt.Errorf("delete from %s: %w", t.name, err)
		}
	}
	return nil
}

// sums is t's checksum of the tenant's rows, computed by the database (no
// row leaves it): the rows' hashes (rowHash) in 256 buckets by their
// first byte, each bucket's row count and the md5 of its hashes in order.
// Equal sums, equal sets of rows.
func sums(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT left(h, 2), count(*)::text || ' ' || md5(string_agg(h, '' ORDER BY h COLLATE "C"))
		FROM (SELECT `+rowHash+` AS h FROM `+t.ident+` r WHERE tenant_id = $1) x GROUP BY 1`, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var b, s string
	_, err = pgx.ForEachRow(rows, []any{&b, &s}, func() error { out[b] = s; return nil })
	return out, err
}

// both2 runs f and g at once (each on its own transaction, as a pgx.Tx is
// not for concurrent use) and returns the first error.
func both2(f, g func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- g() }()
	err := f()
	return errors.Join(err, <-errc)
}

// verifyAll holds dst to src, table by table: equal sums, computed by the
// two databases at once.
func verifyAll(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID) error {
	for _, t := range tables {
		var a, b map[string]string
		err := both2(func() (err error) {
			a, err = sums(ctx, src, t, tenant)
			return err
		}, func() (err error) {
			b, err = sums(ctx, dst, t, tenant)
			return err
		})
		if err != nil {
			return fmt.Errorf("checksum %s: %w", t.name, err)
		}
		if !maps.Equal(a, b) {
			return &MismatchError{Detail: fmt.Sprintf("table %s: the checksums of %d of %d buckets differ", t.name, differing(a, b), max(len(a), len(b)))}
		}
	}
	return nil
}

func differing(a, b map[string]string) int {
	n := 0
	for k, v := range a {
		if b[k] != v {
			n++
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			n++
		}
	}
	return n
}

// changedSQL selects the key, the JSON form and the hash of every row of
// the tenant ($1) in r whose version was written by a transaction with an
// id at or past $2, the low 32 bits of a snapshot's xmin: every row
// written since that snapshot, and some written just before it (harmless,
// they are copied again). Row versions carry 32-bit ids; an id at or past
// the xmin is at most 2^31 past it, so the difference modulo 2^32 tells
// them apart. A version frozen since the snapshot would read as older:
// the snapshot's transaction is held open until the rows are read, which
// keeps VACUUM from freezing any version its xmin does not cover.
func changedSQL(t table) string {
	return `SELECT k, j, md5(j) FROM (SELECT ` + t.key() + ` AS k, to_jsonb(r)::text AS j FROM ` + t.ident + ` r
		WHERE tenant_id = $1 AND ((r.xmin::text::bigint - $2) & 4294967295) < 2147483648) x`
}

// count is the number of rows of tenant in t.
func count(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (int64, error) {
	var n int64
	err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.ident+` WHERE tenant_id = $1`, tenant).Scan(&n)
	return n, err
}

// keyBuckets counts the tenant's rows of t by key bucket: the first three
// hex digits of the md5 of the row's key.
func keyBuckets(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (map[string]int64, error) {
	rows, err := tx.Query(ctx, `SELECT left(md5(k), 3), count(*) FROM (SELECT `+t.key()+` AS k FROM `+t.ident+` r WHERE tenant_id = $1) x GROUP BY 1`, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var b string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&b, &n}, func() error { out[b] = n; return nil })
	return out, err
}

// keysIn returns the keys of the tenant's rows of t in the key buckets
// buckets.
func keysIn(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID, buckets []string) (map[string]bool, error) {
	rows, err := tx.Query(ctx, `SELECT k FROM (SELECT `+t.key()+` AS k FROM `+t.ident+` r WHERE tenant_id = $1) x WHERE left(md5(k), 3) = ANY($2)`, tenant, buckets)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	var k string
	_, err = pgx.ForEachRow(rows, []any{&k}, func() error { out[k] = true; return nil })
	return out, err
}

// since makes dst equal src, given that it equalled src as of a snapshot
// whose xmin had the low 32 bits lo, and checks it; it returns the rows it
// changed. It reads and writes only the rows written since the snapshot
// (changedSQL) and the surplus rows of a table the source deleted from;
// past them, the databases only count. Every source row not written since
// the snapshot is the one the target holds; every row written since is
// copied, so the target holds every source row and a surplus of rows
// exactly when its count is higher: those are found by key bucket.
func since(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID, lo int64) (int, error) {
	if _, err := dst.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
		return 0, err
	}
	n := 0
	changed := map[string]map[string]string{} // table → key → row hash
	for _, t := range slices.Backward(tables) {
		rows, err := src.Query(ctx, changedSQL(t), tenant, lo)
		if err != nil {
			return n, fmt.Errorf("read %s of the source: %w", t.name, err)
		}
		hs := map[string]string{}
		var batch []string
		var k, j, h string
		if _, err := pgx.ForEachRow(rows, []any{&k, &j, &h}, func() error {
			hs[k] = h
			batch = append(batch, j)
			return nil
		}); err != nil {
			return n, fmt.Errorf("read %s of the source: %w", t.name, err)
		}
		upsert := upsertSQL(t)
		for rows := range slices.Chunk(batch, chunk) {
			if _, err := dst.Exec(ctx, upsert, "["+strings.Join(rows, ",")+"]"); err != nil {
				return n, fmt.Errorf("write %s: %w", t.name, err)
			}
		}
		changed[t.name] = hs
		n += len(hs)
	}
	want := map[string]int64{}
	for _, t := range tables {
		var a, b int64
		if err := both2(func() (err error) {
			a, err = count(ctx, src, t, tenant)
			return err
		}, func() (err error) {
			b, err = count(ctx, dst, t, tenant)
			return err
		}); err != nil {
			return n, fmt.Errorf("count %s: %w", t.name, err)
		}
		want[t.name] = a
		if b > a {
			extra, err := surplus(ctx, src, dst, t, tenant)
			if err != nil {
				return n, err
			}
			if err := remove(ctx, dst, t, tenant, extra); err != nil {
				return n, err
			}
			n += len(extra)
		}
	}
	// The check: every table's count, and every row copied.
	for _, t := range tables {
		b, err := count(ctx, dst, t, tenant)
		if err != nil {
			return n, fmt.Errorf("count %s: %w", t.name, err)
		}
		if b != want[t.name] {
			return n, &MismatchError{Detail: fmt.Sprintf("table %s: %d rows in the source, %d in the target", t.name, want[t.name], b)}
		}
		hs := changed[t.name]
		for keys := range slices.Chunk(slices.Collect(maps.Keys(hs)), chunk) {
			rows, err := dst.Query(ctx, `SELECT `+t.key()+`, `+rowHash+` FROM `+t.ident+` r
				JOIN jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k ON `+match(t, "r", "k")+`
				WHERE r.tenant_id = $1`, tenant, "["+strings.Join(keys, ",")+"]")
			if err != nil {
				return n, fmt.Errorf("read %s of the target: %w", t.name, err)
			}
			found := 0
			var k, h string
			if _, err := pgx.ForEachRow(rows, []any{&k, &h}, func() error {
				if hs[k] != h {
					return &MismatchError{Detail: fmt.Sprintf("table %s: a row copied at the cut-over differs", t.name)}
				}
				found++
				return nil
			}); err != nil {
				return n, err
			}
			if found != len(keys) {
				return n, &MismatchError{Detail: fmt.Sprintf("table %s: %d of %d rows copied at the cut-over are missing", t.name, len(keys)-found, len(keys))}
			}
		}
	}
	return n, nil
}

// surplus returns the keys of the rows of t that dst holds and src does
// not, comparing the two by key bucket and reading the keys of the
// buckets that differ.
func surplus(ctx context.Context, src, dst pgx.Tx, t table, tenant uuid.UUID) ([]string, error) {
	var a, b map[string]int64
	if err := both2(func() (err error) {
		a, err = keyBuckets(ctx, src, t, tenant)
		return err
	}, func() (err error) {
		b, err = keyBuckets(ctx, dst, t, tenant)
		return err
	}); err != nil {
		return nil, fmt.Errorf("count the keys of %s: %w", t.name, err)
	}
	var buckets []string
	for k, n := range b {
		if a[k] != n {
			buckets = append(buckets, k)
		}
	}
	var have, extra map[string]bool
	if err := both2(func() (err error) {
		have, err = keysIn(ctx, src, t, tenant, buckets)
		return err
	}, func() (err error) {
		extra, err = keysIn(ctx, dst, t, tenant, buckets)
		return err
	}); err != nil {
		return nil, fmt.Errorf("read the keys of %s: %w", t.name, err)
	}
	var out []string
	for k := range extra {
		if !have[k] {
			out = append(out, k)
		}
	}
	return out, nil
}
