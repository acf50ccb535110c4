//go:build citus

package archive_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/archive"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// On a Citus coordinator an rls tenant's export imports into the
// distributed tenant tables (an INSERT … SELECT that Citus would otherwise
// turn into a COPY, which Row-Level Security refuses), and the restored
// tenant's rows are then on the worker that holds its shard, every one of
// them, and nowhere else.
func TestCitusImportLandsOnTheTenantsWorker(t *testing.T) {
	t.Parallel()
	if !pgtest.Citus(t) {
		t.Fatal("the test server is not a Citus coordinator: run this through `make test/citus`")
	}
	ctx := context.Background()
	env := apitest.Start(t, nil, apitest.WithStrategy(isolation.RLS))
	fill(t, env, env.Tenant(t, "source"))
	path, m := export(t, env, "source")
	restored, _, err := archive.New(env.Control, env.Strategy).Import(ctx, path, "restored")
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	admin, err := pgx.Connect(ctx, env.DB.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, tb := range m.Tables {
		if tb.Rows == 0 {
			continue
		}
		type placement struct {
			Port    int
			Owner   bool
			Success bool
			Result  string
		}
		// Every placement of the table, asked on its worker how many of
		// the restored tenant's rows it holds; the one owning the
		// tenant's hash is the one Citus routes it to.
		rows, err := admin.Query(ctx, `
			SELECT p.nodeport, p.shardid = get_shard_id_for_distribution_column($1::regclass, $2::uuid), p.success, p.result
			FROM run_command_on_placements($1::regclass, format($$SELECT count(*) FROM %%s WHERE tenant_id = %L$$, $2::text)) p`,
			tb.Name, restored.ID)
		if err != nil {
			t.Fatalf("%s: %v", tb.Name, err)
		}
		placements, err := pgx.CollectRows(rows, pgx.RowToStructByPos[placement])
		if err != nil {
			t.Fatalf("%s: %v", tb.Name, err)
		}
		owners := 0
		for _, p := range placements {
			want := "0"
			if p.Owner {
				owners++
				want = strconv.FormatInt(tb.Rows, 10)
			}
			if !p.Success || p.Result != want {
				t.Errorf("%s on worker %d (the tenant's shard: %v): %q rows of the restored tenant (success %v), want %s",
					tb.Name, p.Port, p.Owner, p.Result, p.Success, want)
			}
		}
		if owners != 1 {
			t.Errorf("%s: %d placements own the restored tenant's hash, want 1 (is it distributed?)", tb.Name, owners)
		}
	}
}
