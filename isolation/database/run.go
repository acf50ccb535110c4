package database

// Run and acquire: a tenant's pool, its connection, its transaction.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// poolConfig is the configuration of the pool of one tenant database:
// the server's serving configuration with the database replaced, every
// connection dialled through the budget.
func (s *Strategy) poolConfig(key poolKey, p *tenantPool) (*pgxpool.Config, error) {
	srv := s.servers[key.server]
	if srv == nil || srv.app == nil {
		return nil, isolation.ErrNoApp
	}
	cfg := srv.app.Copy()
	cfg.ConnConfig.Database = key.db
	cfg.MaxConns = int32(s.cfg.MaxConnections)
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	cfg.MaxConnIdleTime = s.cfg.IdleTimeout
	cfg.HealthCheckPeriod = min(max(s.cfg.IdleTimeout/2, 100*time.Millisecond), time.Minute)
	// Bounds a connection attempt, the wait for a slot included. The wait
	// of a Run ends with its AcquireTimeout, so the attempt keeps
	// connectAllowance for the server itself: a timeout then means the
	// server did not answer, never that the budget was busy.
	cfg.ConnConfig.ConnectTimeout = s.cfg.AcquireTimeout + connectAllowance
	cfg.ConnConfig.DialFunc = s.budget.dialer(p, cfg.ConnConfig.DialFunc)
	// No ping before reuse (pgxpool pings a connection idle over a
	// second): with more tenants than connections most reuses come after
	// such a gap, and the ping is a round trip before every one of them.
	// A connection that died while idle is found by the BEGIN, or the
	// one-read pipeline, that Run sends first, and replaced once: nothing
	// ran on it.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	// No AfterRelease: with one, pgxpool releases in a goroutine of its
	// own, and awaitOwn could not be woken once the connection is idle.
	// release does that hook's work.
	return cfg, nil
}

// Run runs fn in a transaction of t's database bound to t. It waits at
// most AcquireTimeout for a connection and then returns an error wrapping
// isolation.ErrUnavailable; so does it at once while t's server is known
// to be down. A pooled connection found dead by its BEGIN (the server
// restarted) empties the pool of t and is replaced once: nothing ran yet.
// The connection, and with it its slot of the budget, is released in a
// deferred call: a panic in fn returns both.
func (s *Strategy) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	bind, err := isolation.BindStatements(ctx, t.ID, searchPath)
	if err != nil {
		return err
	}
	srv, db, err := s.locate(t)
	if err != nil {
		return err
	}
	if srv.app == nil {
		return isolation.ErrNoApp
	}
	if srv.down() {
		return fmt.Errorf("%w: server %s is down", isolation.ErrUnavailable, srv.name)
	}
	p, err := s.pools.get(poolKey{srv.name, db})
	if err != nil {
		return err
	}
	defer s.pools.put(p)
	actx, cancel := context.WithTimeout(ctx, s.cfg.AcquireTimeout)
	defer cancel()
	patient, retried := false, false
	for {
		s.awaitOwn(actx, p, patient)
		conn, err := p.pool.Acquire(context.WithValue(actx, acquireKey{}, actx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errSurplus) && actx.Err() == nil {
				// No slot for another connection of t: wait longer for
				// its own, until the acquire timeout. Nothing was
				// dialled, so the retry below is not spent.
				patient = true
				continue
			}
			if srv.noteDown(ctx, err) {
				s.log.Warn("tenant database server unreachable", "server", srv.name, "err", err)
			}
			return fmt.Errorf("%w: tenant %s: %w", isolation.ErrUnavailable, t, err)
		}
		retry, err := s.runOn(ctx, p, conn, bind, fn, !retried)
		if retry {
			retried = true
			p.pool.Reset() // its other idle connections died with this one
			continue
		}
		if isolation.StalePlan(err) {
			// The tenant's tables changed under the pool's cached
			// statements (a migration ran): start its connections afresh,
			// so that the Registry's retry, or the client's, prepares
			// them again.
			p.pool.Reset()
		}
		return isolation.MarkStale(err)
	}
}

// runOn runs fn in a transaction of conn and releases conn, whatever
// happens, panics included. It reports retry when conn was found dead by
// the BEGIN and mayRetry allows another attempt: nothing ran yet. Under
// isolation.OneRead the BEGIN travels with the statement, and the
// connection found dead by it is retried likewise: a read-only
// transaction changed nothing, whatever ran.
func (s *Strategy) runOn(ctx context.Context, p *tenantPool, conn *pgxpool.Conn, bind []isolation.Step, fn func(pgx.Tx) error, mayRetry bool) (retry bool, err error) {
	defer s.release(p, conn)
	if isolation.IsOneRead(ctx) {
		err := isolation.RunOn(ctx, conn.Conn(), bind, fn)
		return err != nil && mayRetry && conn.Conn().IsClosed() && ctx.Err() == nil, err
	}
	tx, err := conn.BeginTx(ctx, isolation.BeginOptions(bind))
	if err != nil {
		return mayRetry && conn.Conn().IsClosed() && ctx.Err() == nil, err
	}
	return false, runTx(ctx, tx, fn)
}

// connectAllowance is how long a connection attempt may take once it holds
// a slot of the budget: dial, TLS, authentication.
const connectAllowance = 5 * time.Second

// ownWait bounds how long a Run waits for a connection of its own tenant's
// pool to come free before it dials one.
const ownWait = 3 * time.Millisecond

// awaitOwn waits, while the budget has no free slot and every connection of
// p is busy, up to s.ownWait (patient: a quarter of quietAfter) for one of
// them to come free. Dialling instead would evict another tenant's idle
// connection, and that tenant would dial again on its next request: with
// more active tenants than the budget has connections, the pools would
// keep trading slots, each trade the price of a backend start. It wakes
// when p's connection is back (release) or a slot is free (budget.give),
// not on a timer. A Run is patient once the budget refused it another
// connection (errSurplus): no connection is worth closing for it.
func (s *Strategy) awaitOwn(ctx context.Context, p *tenantPool, patient bool) {
	var timeout <-chan time.Time
	for {
		// Taken before the checks, so a release between them and the
		// wait still wakes it.
		released, freed := p.released.C(), s.budget.freed.C()
		st := p.pool.Stat()
		if st.IdleConns() > 0 || st.TotalConns() == 0 || s.budget.room() {
			return
		}
		if timeout == nil {
			// Patient, it still looks again now and then: another
			// tenant's connection turns spare once it is quiet.
			wait := s.ownWait
			if patient {
				wait = quietAfter / 4
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-released:
		case <-freed:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// release gives conn, of p, back. A surplus connection released while a
// pool with no connection waits for a slot closes, so that the slot goes
// where it is needed. A pool's last connection stays: the waiters evict idle
// connections of the least used pools first, and closing a busy tenant's only
// connection would make it dial again at once, churning the budget. A
// connection that stays is idle in p when release returns, and the Runs
// waiting for one in awaitOwn are woken.
func (s *Strategy) release(p *tenantPool, conn *pgxpool.Conn) {
	pc := conn.Conn().PgConn()
	if !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I' &&
		p.pool.Stat().TotalConns() > 1 && s.budget.coldWait() {
		raw := conn.Hijack()
		s.pools.goClose(raw)
		return
	}
	conn.Release() // destroys a closed, busy or in-transaction one itself
	p.released.notify()
}

// runTx runs fn in tx and commits when it returns nil, as pgx.BeginTxFunc
// does once the transaction has begun.
func runTx(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) (err error) {
	defer func() {
		if rerr := tx.Rollback(ctx); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) && err == nil {
			err = rerr
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
