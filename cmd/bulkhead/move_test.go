package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

// TestTenantMoveRefusesARunningMove: while another process runs a
// tenant's move (holds its lease), `tenant move` (resume) and `tenant move
// --abort` exit 1 with one line saying so; once it lets go, the abort runs.
func TestTenantMoveRefusesARunningMove(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL}
	if code, _, stderr := runCLI(t, env, "tenant", "create", "acme"); code != 0 {
		t.Fatalf("tenant create: exit %d: %s", code, stderr)
	}
	// The other process: it began the move and runs it.
	cfg := pgtest.Config(db)
	pools, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pools.Close()
	other := control.New(pools, isolation.RegistryOf(rls.New(pools.App, pools.Owner)), cfg, pgtest.Logger())
	runner, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mv, err := other.StartMove(ctx, "acme", control.Placement{Isolation: isolation.Schema}, runner, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"tenant", "move", "acme", "--to", "schema"},
		{"tenant", "move", "acme", "--abort"},
	} {
		code, _, stderr := runCLI(t, env, args...)
		if code != exitFailure || !strings.Contains(stderr, control.MoveRunningMsg) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v while another process runs the move: exit %d, %q; want exit 1 and one line with %q", args, code, stderr, control.MoveRunningMsg)
		}
	}
	other.ReleaseMove(mv)
	code, out, stderr := runCLI(t, env, "tenant", "move", "acme", "--abort")
	if code != 0 || !strings.Contains(out, "rolled_back") {
		t.Fatalf("abort once the other process let go: exit %d: %s %s", code, out, stderr)
	}
}
