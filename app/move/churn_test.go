package move_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// churn is traffic that changes and deletes rows as well as adding them:
// each writer creates an account, renames it, and deletes every other
// one, remembering what each account must be after its last acknowledged
// write. The cut-over copies only the rows changed since its catch-up,
// finding deletions by count and key bucket: this holds it to them.
type churn struct {
	l    *load
	mu   sync.Mutex
	want map[string]string // external id → name, "" once deleted
	// unsure are accounts whose last write was not acknowledged.
	unsure map[string]bool
	ops    map[string]int
}

func newChurn(b bundle) *churn {
	return &churn{l: &load{b: b}, want: map[string]string{}, unsure: map[string]bool{}}
}

// start starts the writers, keeping what earlier ones acknowledged.
func (c *churn) start(b bundle, writers int) *churn {
	c.l.stop = make(chan struct{})
	c.l.wg = sync.WaitGroup{}
	c.l.failed = nil
	c.ops = map[string]int{}
	for w := range writers {
		c.l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-c.l.stop:
					return
				default:
				}
				c.one(b, fmt.Sprintf("c%d-%d", w, seq.Add(1)), i%2 == 0)
			}
		})
	}
	return c
}

func (c *churn) note(op, ext, name string, status int, body []byte, ok int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if status != ok {
		c.unsure[ext] = true
		c.l.failed = append(c.l.failed, fmt.Sprintf("%s %s: %d %s", op, ext, status, body))
		return false
	}
	c.want[ext] = name
	c.ops[op]++
	return true
}

func (c *churn) one(b bundle, ext string, del bool) {
	status, body := c.l.do("POST", "/v1/accounts", b.tn.Editor, map[string]any{"provider": "gcp", "external_id": ext, "name": "new"})
	if !c.note("create", ext, "new", status, body, 201) {
		return
	}
	var a struct{ ID string }
	if err := json.Unmarshal(body, &a); err != nil {
		c.note("create", ext, "", 0, []byte(err.Error()), 201)
		return
	}
	status, body = c.l.do("PATCH", "/v1/accounts/"+a.ID, b.tn.Editor, map[string]any{"name": "renamed"})
	if !c.note("rename", ext, "renamed", status, body, 200) || !del {
		return
	}
	status, body = c.l.do("DELETE", "/v1/accounts/"+a.ID, b.tn.Editor, nil)
	c.note("delete", ext, "", status, body, 204)
}

// check lists the tenant's accounts and holds them to the acknowledged
// writes.
func (c *churn) check(t *testing.T) {
	t.Helper()
	got := map[string]string{}
	for ext, a := range listAccounts(t, c.l.b) {
		got[ext] = a.Name
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.l.failed {
		t.Errorf("request failed during the move: %s", f)
	}
	for ext, name := range c.want {
		if c.unsure[ext] {
			continue
		}
		if got[ext] != name {
			t.Errorf("account %s: %q after the move, want %q (\"\" is deleted)", ext, got[ext], name)
		}
	}
	for ext := range got {
		if _, ok := c.want[ext]; !ok && len(ext) > 0 && ext[0] == 'c' {
			t.Errorf("account %s is there after the move and was never acknowledged", ext)
		}
	}
	t.Logf("acknowledged %v", c.ops)
}

// TestMoveUnderChurn moves a tenant while its rows are created, changed
// and deleted: after each move every acknowledged write is there as last
// written, and every acknowledged delete is gone.
func TestMoveUnderChurn(t *testing.T) {
	t.Parallel()
	b := setup(t, isolation.RLS)
	c := newChurn(b)
	for _, to := range []string{isolation.Database, isolation.Schema} {
		c.start(b, 4)
		deadline := time.Now().Add(time.Minute)
		for {
			c.mu.Lock()
			n := c.ops["delete"]
			c.mu.Unlock()
			if n >= 10 {
				break
			}
			if time.Now().After(deadline) {
				c.l.end(t)
				t.Fatalf("the churn acknowledged %d deletes within a minute", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		mv, err := b.mover(move.Options{}).Move(ctx, "acme", control.Placement{Isolation: to})
		cancel()
		if err != nil {
			c.l.end(t)
			t.Fatalf("move to %s: %v", to, err)
		}
		time.Sleep(200 * time.Millisecond) // writes go on, on the new placement
		c.l.end(t)
		c.check(t)
		if mv.Step != control.MoveDone || mv.PauseMS == nil {
			t.Fatalf("move to %s ended as %+v", to, mv)
		}
		t.Logf("to %s: pause %d ms, %d rows copied", to, *mv.PauseMS, mv.RowsCopied)
	}
}
