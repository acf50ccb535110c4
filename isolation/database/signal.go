package database

import "sync"

// signal wakes every goroutine waiting on it at once. A waiter takes C
// before it checks what it waits for and then waits on it, so a notify
// between the check and the wait is not lost. The zero value is ready to
// use, and it is safe for concurrent use.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns a channel closed by the next notify.
func (s *signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// notify wakes everyone waiting on a channel C returned.
func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
