package database

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// endedSession returns the error a session ended by pg_terminate_backend
// reports on its next use, as a tenant database's sessions do when a move
// or delete drops it: 57P01, admin_shutdown.
func endedSession(t *testing.T, db *pgtest.DB) error {
	t.Helper()
	ctx := t.Context()
	victim, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(context.Background())
	admin, err := pgx.Connect(ctx, db.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, victim.PgConn().PID()); err != nil {
		t.Fatal(err)
	}
	err = victim.Ping(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		t.Fatalf("a terminated session answers %v, want 57P01", err)
	}
	return err
}

// Dropping one tenant database ends its sessions with 57P01, which a
// server shutting down sends too: the server whose own database answers
// is not marked down (its other tenants keep being served), one whose
// database does not answer is.
func TestEndedSessionMarksDownOnlyAServerThatIsDown(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ended := endedSession(t, db)
	ctx := t.Context()

	up, err := New(Config{Servers: []Server{{Name: "up", URL: db.AppURL}}, MaxConnections: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	srv := up.servers["up"]
	if srv.noteDown(ctx, ended) || srv.down() {
		t.Error("a session ended on a server that answers marked the server down")
	}

	// Nothing listens on port 1.
	gone, err := New(Config{Servers: []Server{{Name: "gone", URL: "postgres://bulkhead_app@127.0.0.1:1/bulkhead?connect_timeout=1"}}, MaxConnections: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	srv = gone.servers["gone"]
	if !srv.noteDown(ctx, ended) || !srv.down() {
		t.Error("a session ended on a server that does not answer did not mark it down")
	}
	// Other refusals are not the server's: untouched.
	other := &pgconn.PgError{Code: "42501"}
	if fresh := (&server{name: "x"}); fresh.noteDown(ctx, other) || fresh.down() {
		t.Error("a permission error marked the server down")
	}
}
