package move

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// The cut-over finds a row deleted since the catch-up's snapshot even
// when a row inserted since falls in the same key bucket: counted
// together, the two would leave the bucket's count unchanged, and the
// deleted row would stay in the target (the move then fails its check).
func TestSurplusSeesADeleteBehindAnInsertOfItsBucket(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tenant := uuid.New()
	for _, s := range []string{"src", "dst"} {
		db.Exec(t, `CREATE SCHEMA `+s+`; CREATE TABLE `+s+`.items (tenant_id uuid, id text, PRIMARY KEY (tenant_id, id))`)
		db.Exec(t, `INSERT INTO `+s+`.items SELECT $1, 'k' || i FROM generate_series(0, 99) i`, tenant)
	}
	conn, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The catch-up's snapshot: dst holds what src held then.
	var lo int64
	if err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint & 4294967295`).Scan(&lo); err != nil {
		t.Fatal(err)
	}
	key := `jsonb_build_object('tenant_id', $1::uuid, 'id', %s)::text`
	var gone, added, addedKey string
	err = conn.QueryRow(ctx, `SELECT `+fmt.Sprintf(key, "'k7'")+`, 'n' || i, `+fmt.Sprintf(key, "'n' || i")+`
		FROM generate_series(1, 100000) i
		WHERE left(md5(`+fmt.Sprintf(key, "'n' || i")+`), 3) = left(md5(`+fmt.Sprintf(key, "'k7'")+`), 3) LIMIT 1`, tenant).Scan(&gone, &added, &addedKey)
	if err != nil {
		t.Fatalf("no id shares k7's bucket: %v", err)
	}
	db.Exec(t, `DELETE FROM src.items WHERE tenant_id = $1 AND id = 'k7'`, tenant)
	db.Exec(t, `INSERT INTO src.items VALUES ($1, $2)`, tenant, added)

	tbl := table{name: "items", ident: "items", pk: []string{`"tenant_id"`, `"id"`}, pkRaw: []string{"tenant_id", "id"}}
	in := func(schema string, fn func(pgx.Tx) error) func() error {
		return func() error {
			c, err := pgx.Connect(ctx, db.AdminURL)
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL search_path = " + schema}, fn)
		}
	}
	var extra []string
	err = in("src", func(src pgx.Tx) error {
		return in("dst", func(dst pgx.Tx) error {
			var err error
			extra, err = surplus(ctx, src, dst, tbl, tenant, lo, []string{addedKey})
			return err
		})()
	})()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(extra, []string{gone}) {
		t.Fatalf("surplus found %q, want the deleted row %q", extra, gone)
	}
}
