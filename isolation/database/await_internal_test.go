package database

import (
	"context"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/await"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// awaitOwnWithin runs s.awaitOwn for p in the background and returns a
// channel closed when it returns.
func awaitOwnWithin(s *Strategy, p *tenantPool) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.awaitOwn(context.Background(), p, false)
	}()
	return done
}

// A Run waiting for its tenant's busy connection is woken by the release of
// it, or by a slot coming free, not by a timer: with a bound far longer
// than the test's deadline, only the wake-up ends the wait.
func TestAwaitOwnWakesOnRelease(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	p := &tenantPool{pool: pgtest.Pool(t, db.AppURL)}
	s := &Strategy{budget: newBudget(1), ownWait: time.Hour}
	s.budget.used = 1 // spent: awaitOwn would rather wait than dial
	ctx := context.Background()
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}

	done := awaitOwnWithin(s, p)
	select {
	case <-done:
		t.Fatal("awaitOwn returned while the budget is spent and the pool's only connection busy")
	default:
	}
	s.release(p, conn)
	await.Recv(t, done, "awaitOwn to wake on the release of the pool's connection")
	if st := p.pool.Stat(); st.IdleConns() != 1 {
		t.Errorf("after release: %d idle connections, want the released one", st.IdleConns())
	}

	// A slot freed wakes it too.
	if conn, err = p.pool.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	done = awaitOwnWithin(s, p)
	s.budget.give()
	await.Recv(t, done, "awaitOwn to wake on a slot coming free")
}

func TestSignalWakesEveryWaiterOnce(t *testing.T) {
	t.Parallel()
	var sig signal
	a, b := sig.C(), sig.C()
	sig.notify()
	await.Recv(t, a, "the first waiter")
	await.Recv(t, b, "the second waiter")
	select {
	case <-sig.C():
		t.Error("a channel taken after the notify is closed already")
	default:
	}
}
