package pgtest

import (
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// A goroutine that a test leaves running fails a run that passed, and its
// stack is printed; one that was running before the tests does not.
func TestRunFailsOnALeakedGoroutine(t *testing.T) {
	// Not parallel: run compares the process's goroutines before and after.
	before, leaked := make(chan struct{}), make(chan struct{})
	go func() { <-before }()
	defer close(before)
	var out strings.Builder
	code := run(func() int {
		go leakedForTest(leaked)
		return 0
	}, func() {}, &out, time.Second)
	close(leaked)
	if code != 1 || !strings.Contains(out.String(), "leakedForTest") {
		t.Errorf("a leaking run: exit code %d, output %q; want 1 and the leaked goroutine's stack", code, out.String())
	}

	out.Reset()
	if code := run(func() int { return 0 }, func() {}, &out, time.Second); code != 0 {
		t.Errorf("a run that leaks nothing, with a goroutine from before it: exit code %d, output %q; want 0", code, out.String())
	}

	// A goroutine that ends soon after the tests (a pool closing) is not
	// a leak.
	out.Reset()
	if code := run(func() int {
		go time.Sleep(50 * time.Millisecond)
		return 0
	}, func() {}, &out, time.Second); code != 0 {
		t.Errorf("a goroutine that ends after the run: exit code %d, output %q; want 0", code, out.String())
	}

	// A failed run keeps its own code and is not checked.
	if code := run(func() int { return 3 }, func() {}, &out, time.Second); code != 3 {
		t.Errorf("a failed run: exit code %d, want its own 3", code)
	}
}

// What AtExit registers runs after the tests, the last registered first,
// before the leak check: a goroutine it ends (the process of a PgBouncer
// shared by the tests) is not a leak.
func TestAtExitRunsBeforeTheLeakCheck(t *testing.T) {
	// Not parallel: run compares the process's goroutines before and after.
	var order []int
	var out strings.Builder
	code := run(func() int {
		shared := make(chan struct{})
		go leakedForTest(shared)
		AtExit(func() { order = append(order, 1); close(shared) })
		AtExit(func() { order = append(order, 2) })
		return 0
	}, runAtExit, &out, time.Second)
	if code != 0 {
		t.Errorf("a goroutine ended by an AtExit function: exit code %d, output %q; want 0", code, out.String())
	}
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("AtExit functions ran in the order %v, want [2 1]", order)
	}
	runAtExit()
	if len(order) != 2 {
		t.Errorf("AtExit functions ran again: %v", order)
	}
}

func leakedForTest(done chan struct{}) { <-done }
