// Package await bounds a test's waits: each fails the test, naming what it
// waited for, after Deadline, where a bare channel receive or
// WaitGroup.Wait would hang the package until go test's -timeout and then
// say only which goroutines were blocked.
package await

import (
	"sync"
	"testing"
	"time"
)

// Deadline is how long a wait lasts before it fails the test: long enough
// for a machine at a heavy load, short of go test's timeout.
const Deadline = 2 * time.Minute

// Recv receives from ch and returns the value (the zero value once ch is
// closed), or fails tb with what after Deadline. Call it from the test's
// goroutine.
func Recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	timer := time.NewTimer(Deadline)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		tb.Fatalf("waited %s for %s", Deadline, what)
		panic("unreachable")
	}
}

// Group waits for wg, or fails tb with what after Deadline (leaving the
// goroutine that waits on wg behind: the test has failed). Call it from
// the test's goroutine.
func Group(tb testing.TB, wg *sync.WaitGroup, what string) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Recv(tb, done, what)
}
