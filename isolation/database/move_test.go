package database_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// A tenant's database moves to another server while the tenant takes
// writes: every acknowledged write is there afterwards, once, no request
// failed, and the database is gone from the first server.
func TestMoveBetweenServers(t *testing.T) {
	t.Parallel()
	e, _, ts := twoServers(t)
	tn := on(ts, "main")[0]
	var (
		mu     sync.Mutex
		acked  []string
		failed []string
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ext := fmt.Sprintf("w%d-%d", w, i)
				body, _ := json.Marshal(map[string]any{"provider": "aws", "external_id": ext, "name": "load"})
				req, _ := http.NewRequest("POST", e.URL+"/v1/accounts", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tn.Editor)
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.Client.Do(req)
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err.Error())
				case resp.StatusCode != 201:
					failed = append(failed, fmt.Sprintf("%s: %d", ext, resp.StatusCode))
				default:
					acked = append(acked, ext)
				}
				mu.Unlock()
				if resp != nil {
					resp.Body.Close()
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mover := move.New(e.Control, e.Registry, slog.New(slog.DiscardHandler), move.Options{})
	mv, err := mover.Move(ctx, tn.Slug, control.Placement{Isolation: isolation.Database, Server: "spare"})
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the writers did not stop within a minute")
	}
	if err != nil {
		t.Fatalf("move to spare: %v", err)
	}
	if mv.To.Server != "spare" || mv.Step != control.MoveDone {
		t.Fatalf("move ended as %+v", mv)
	}
	for _, f := range failed {
		t.Errorf("request failed during the move: %s", f)
	}
	if len(acked) == 0 {
		t.Error("no write was acknowledged during the move")
	}
	conn := e.adminConn(t, "spare", tn.Placement)
	if n := pgtest.Count(t, conn, `SELECT count(*) FROM accounts`); n != len(acked)+1 {
		t.Errorf("the database on spare holds %d accounts, want %d (acknowledged + 1)", n, len(acked)+1)
	}
	if n := pgtest.Count(t, conn, `SELECT count(DISTINCT external_id) FROM accounts`); n != len(acked)+1 {
		t.Errorf("%d distinct accounts on spare, want %d", n, len(acked)+1)
	}
	main := e.adminConn(t, "main", "postgres")
	if n := pgtest.Count(t, main, `SELECT count(*) FROM pg_database WHERE datname = $1`, tn.Placement); n != 0 {
		t.Errorf("the tenant's database is still on main")
	}
	e.Must(t, 200, "GET", "/v1/accounts", tn.Viewer, nil)
}
