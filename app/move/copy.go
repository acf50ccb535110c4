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
	"strconv"
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

// bucket is a share of a table's rows, by the first byte of their hash.
type bucket struct {
	rows int64
	md5  string
}

// sums is t's checksum of the tenant's rows, computed by the database (no
// row leaves it): the rows' hashes (rowHash) in 256 buckets by their
// first byte, each bucket's row count and the md5 of its hashes in order.
// Equal sums, equal sets of rows.
func sums(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (map[string]bucket, error) {
	rows, err := tx.Query(ctx, `SELECT left(h, 2), count(*), md5(string_agg(h, '' ORDER BY h COLLATE "C"))
		FROM (SELECT `+rowHash+` AS h FROM `+t.ident+` r WHERE tenant_id = $1) x GROUP BY 1`, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string]bucket{}
	var k string
	var b bucket
	_, err = pgx.ForEachRow(rows, []any{&k, &b.rows, &b.md5}, func() error { out[k] = b; return nil })
	return out, err
}

// atOnce runs f and g at once (each on its own transaction, as a pgx.Tx is
// not for concurrent use) and returns their errors, joined. It returns
// only once g has, even when f panics: the transactions' rollback, on the
// way out, must not race g's use of its connection.
func atOnce(f, g func() error) (err error) {
	errc := make(chan error, 1)
	go func() { errc <- g() }()
	defer func() { err = errors.Join(err, <-errc) }()
	return f()
}

// verifyAll holds dst to src, table by table: equal sums, computed by the
// two databases at once. It returns the tables' row counts.
func verifyAll(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID) (map[string]int64, error) {
	counts := map[string]int64{}
	for _, t := range tables {
		var a, b map[string]bucket
		err := atOnce(func() (err error) {
			a, err = sums(ctx, src, t, tenant)
			return err
		}, func() (err error) {
			b, err = sums(ctx, dst, t, tenant)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("checksum %s: %w", t.name, err)
		}
		if !maps.Equal(a, b) {
			return nil, &MismatchError{Detail: fmt.Sprintf("table %s: the checksums of %d of %d buckets differ", t.name, differing(a, b), max(len(a), len(b)))}
		}
		counts[t.name] = 0
		for _, b := range b {
			counts[t.name] += b.rows
		}
	}
	return counts, nil
}

func differing(a, b map[string]bucket) int {
	n := 0
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
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

// changedSQL reads, in one pass over the rows of the tenant ($1) in t,
// their count and the key, JSON form and hash of every row whose version
// was written by a transaction with an id at or past $2, the (32-bit) xmin
// of a snapshot: every row written since that snapshot, and some written
// just before it (harmless, they are copied again). Ids are compared by
// their age, which counts modulo 2^32 back from the newest, and is the
// largest for a frozen version. A version frozen since the snapshot would
// so read as older: the snapshot's transaction is held open until the
// rows are read, which keeps VACUUM from freezing any version its xmin
// does not cover.
func changedSQL(t table) string {
	return `SELECT count(*), coalesce(array_agg(k) FILTER (WHERE k IS NOT NULL), '{}'),
			coalesce(array_agg(j) FILTER (WHERE k IS NOT NULL), '{}'), coalesce(array_agg(md5(j)) FILTER (WHERE k IS NOT NULL), '{}')
		FROM (SELECT CASE WHEN ` + sinceXmin + ` THEN ` + t.key() + ` END AS k, CASE WHEN ` + sinceXmin + ` THEN to_jsonb(r)::text END AS j
			FROM ` + t.ident + ` r WHERE tenant_id = $1) x`
}

// sinceXmin is the SQL of changedSQL's test of a row r's version.
const sinceXmin = `age(r.xmin) <= (SELECT age($2::xid))`

// count is the number of rows of tenant in t.
func count(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID) (int64, error) {
	var n int64
	err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.ident+` WHERE tenant_id = $1`, tenant).Scan(&n)
	return n, err
}

// keyBuckets counts the tenant's rows of t by key bucket (the first three
// hex digits of the md5 of the row's key) that meet cond, a condition on
// the row r — its key r.k, its version r.xmin — with arg as $2.
func keyBuckets(ctx context.Context, tx pgx.Tx, t table, tenant uuid.UUID, cond string, arg any) (map[string]int64, error) {
	q := `SELECT left(md5(r.k), 3), count(*) FROM (SELECT ` + t.key() + ` AS k, r.xmin AS xmin FROM ` + t.ident + ` r WHERE tenant_id = $1) r
		WHERE ` + cond + ` GROUP BY 1`
	args := []any{tenant, arg}
	rows, err := tx.Query(ctx, q, args...)
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
// whose xmin had the low 32 bits lo (its xid), and checks it; it returns the rows it
// changed. Every source row not written since the snapshot is the one the
// target holds, and the rows written since (changedSQL) are copied; the
// target's other rows are those the source deleted since, as many as its
// count exceeds what the source's unchanged rows and the changed rows it
// holds account for. Those are found by key bucket (surplus) and deleted
// first, so that a row deleted and written anew under another key can
// take its place. The databases count each table once, at once; past
// that, only the rows written since are read, shipped and written, unless
// rows were deleted. counts are the target's rows per table as of the
// catch-up (verifyAll): nothing writes the target since, so only the
// source is read in full here, once.
func since(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID, lo int64, counts map[string]int64) (int, error) {
	if _, err := dst.Exec(ctx, `SET CONSTRAINTS ALL DEFERRED`); err != nil {
		return 0, err
	}
	type state struct {
		want, have int64 // rows in the source, in the target
		present    int64 // changed rows the target holds
		keys, rows []string
		changed    map[string]string // key → row hash
	}
	n := 0
	tabs := map[string]*state{}
	for _, t := range tables {
		st := &state{changed: map[string]string{}}
		var hs []string
		if err := src.QueryRow(ctx, changedSQL(t), tenant, strconv.FormatInt(lo, 10)).Scan(&st.want, &st.keys, &st.rows, &hs); err != nil {
			return n, fmt.Errorf("read %s of the source: %w", t.name, err)
		}
		have, ok := counts[t.name]
		if !ok {
			return n, fmt.Errorf("table %s was not counted at the catch-up", t.name)
		}
		st.have = have
		for i, k := range st.keys {
			st.changed[k] = hs[i]
		}
		if len(st.keys) > 0 {
			if err := dst.QueryRow(ctx, `SELECT count(*) FROM `+t.ident+` r
				JOIN jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k ON `+match(t, "r", "k")+`
				WHERE r.tenant_id = $1`, tenant, "["+strings.Join(st.keys, ",")+"]").Scan(&st.present); err != nil {
				return n, fmt.Errorf("read %s of the target: %w", t.name, err)
			}
		}
		tabs[t.name] = st
	}
	removed := false
	for _, t := range tables {
		st := tabs[t.name]
		unchanged := st.want - int64(len(st.keys))
		if st.have-st.present <= unchanged {
			continue
		}
		extra, err := surplus(ctx, src, dst, t, tenant, lo, st.keys)
		if err != nil {
			return n, err
		}
		if err := remove(ctx, dst, t, tenant, extra); err != nil {
			return n, err
		}
		n += len(extra)
		removed = true
	}
	for _, t := range slices.Backward(tables) {
		st := tabs[t.name]
		upsert := upsertSQL(t)
		for rows := range slices.Chunk(st.rows, chunk) {
			if _, err := dst.Exec(ctx, upsert, "["+strings.Join(rows, ",")+"]"); err != nil {
				return n, fmt.Errorf("write %s: %w", t.name, err)
			}
		}
		n += len(st.rows)
	}
	// The check: every table's count (counted again after a delete, which
	// may cascade), and every row copied.
	for _, t := range tables {
		st := tabs[t.name]
		have := st.have + int64(len(st.keys)) - st.present
		if removed {
			var err error
			if have, err = count(ctx, dst, t, tenant); err != nil {
				return n, fmt.Errorf("count %s: %w", t.name, err)
			}
		}
		if have != st.want {
			return n, &MismatchError{Detail: fmt.Sprintf("table %s: %d rows in the source, %d in the target", t.name, st.want, have)}
		}
		for keys := range slices.Chunk(st.keys, chunk) {
			rows, err := dst.Query(ctx, `SELECT `+t.key()+`, `+rowHash+` FROM `+t.ident+` r
				JOIN jsonb_populate_recordset(NULL::`+t.ident+`, $2::jsonb) k ON `+match(t, "r", "k")+`
				WHERE r.tenant_id = $1`, tenant, "["+strings.Join(keys, ",")+"]")
			if err != nil {
				return n, fmt.Errorf("read %s of the target: %w", t.name, err)
			}
			found := 0
			var k, h string
			if _, err := pgx.ForEachRow(rows, []any{&k, &h}, func() error {
				if st.changed[k] != h {
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
// buckets that differ. dst is the source as of the catch-up's snapshot
// (whose xmin had the low bits lo); what src wrote since — its rows of a
// newer version, whose keys are changed — is left out on both sides, so
// that the rows by which they differ are the ones deleted since, always
// in dst's favour. Counted with the rows inserted since, a bucket that
// lost one row and gained another would count the same on both sides,
// and the deleted row would stay in the target.
func surplus(ctx context.Context, src, dst pgx.Tx, t table, tenant uuid.UUID, lo int64, changed []string) ([]string, error) {
	var a, b map[string]int64
	if err := atOnce(func() (err error) {
		a, err = keyBuckets(ctx, src, t, tenant, "NOT ("+sinceXmin+")", strconv.FormatInt(lo, 10))
		return err
	}, func() (err error) {
		b, err = keyBuckets(ctx, dst, t, tenant, "r.k <> ALL ($2::text[])", changed)
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
	if err := atOnce(func() (err error) {
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

// same holds dst to src row by row: no row differs by key or hash.
func same(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID) error {
	d, err := diff(ctx, src, dst, tables, tenant)
	if err != nil {
		return err
	}
	if d.n != 0 {
		return &MismatchError{Detail: fmt.Sprintf("%d rows differ after the copy", d.n)}
	}
	return nil
}

// everything makes dst equal src by comparing every row, and checks it;
// it returns the rows it changed. It is since without a snapshot to go
// from, its work as large as the tenant.
func everything(ctx context.Context, src, dst pgx.Tx, tables []table, tenant uuid.UUID) (int, error) {
	d, err := diff(ctx, src, dst, tables, tenant)
	if err != nil {
		return 0, err
	}
	if err := apply(ctx, src, dst, tables, tenant, d); err != nil {
		return d.n, err
	}
	return d.n, same(ctx, src, dst, tables, tenant)
}
