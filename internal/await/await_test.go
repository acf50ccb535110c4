package await

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRecvReturnsWhatIsSent(t *testing.T) {
	t.Parallel()
	ch := make(chan int, 1)
	ch <- 7
	if v := Recv(t, ch, "seven"); v != 7 {
		t.Errorf("got %d, want 7", v)
	}
	close(ch)
	if v := Recv(t, ch, "the close"); v != 0 {
		t.Errorf("after the close: got %d, want 0", v)
	}
}

func TestGroupReturnsWhenTheGroupIsDone(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	wg.Add(2)
	for range 2 {
		go wg.Done()
	}
	Group(t, &wg, "two goroutines")
}
