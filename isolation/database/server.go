package database

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// downFor is how long a server whose connection attempt failed is not
// dialled again: its tenants are answered ErrUnavailable at once meanwhile,
// so that an unreachable server cannot hold slots of the budget.
const downFor = time.Second

// server is one PostgreSQL server tenant databases live on.
type server struct {
	name string
	// app is the serving role's pool configuration for the server's
	// control database; tenant pools copy it with the database replaced.
	// nil without a serving DSN.
	app *pgxpool.Config
	// owner is the owner-capable login for the server's control database;
	// nil without one.
	owner *pgx.ConnConfig

	once      sync.Once
	ownerPool *pgxpool.Pool // sessions act as the owner role
	appPool   *pgxpool.Pool // readiness and catalog reads
	poolErr   error

	downUntil atomic.Int64 // unix nanoseconds
	placing   atomic.Int64 // tenants being placed here now
	// preloadRead: Setup has read whether the server preloads plpgsql
	// (and said so if not); every Setup after that skips it.
	preloadRead atomic.Bool
}

// pools opens the server's own pools on first use. They connect lazily.
func (s *server) pools() error {
	s.once.Do(func() {
		if s.owner != nil {
			pc, err := pgxpool.ParseConfig("")
			if err != nil {
				s.poolErr = err
				return
			}
			pc.ConnConfig = s.owner.Copy()
			pc.MaxConns = 4
			pc.AfterConnect = isolation.BecomeOwner
			if s.ownerPool, err = pgxpool.NewWithConfig(context.Background(), pc); err != nil {
				s.poolErr = fmt.Errorf("owner pool of server %s: %w", s.name, err)
				return
			}
		}
		if s.app != nil {
			pc := s.app.Copy()
			pc.MaxConns = 2
			pc.MaxConnIdleTime = time.Minute
			var err error
			if s.appPool, err = pgxpool.NewWithConfig(context.Background(), pc); err != nil {
				s.poolErr = fmt.Errorf("serving pool of server %s: %w", s.name, err)
			}
		}
	})
	return s.poolErr
}

// ownerDB returns the pool whose sessions act as the owner, or
// isolation.ErrNoOwner.
func (s *server) ownerDB() (*pgxpool.Pool, error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	if s.ownerPool == nil {
		return nil, fmt.Errorf("server %s: %w", s.name, isolation.ErrNoOwner)
	}
	return s.ownerPool, nil
}

// reader returns a pool that reads the server's catalogs: the serving
// role's, or the owner's in a process that does not serve.
func (s *server) reader() (*pgxpool.Pool, error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	switch {
	case s.appPool != nil:
		return s.appPool, nil
	case s.ownerPool != nil:
		return s.ownerPool, nil
	}
	return nil, fmt.Errorf("server %s: no url or migrate_url", s.name)
}

// ownerConfig returns the owner's login for the database db of the server.
func (s *server) ownerConfig(db string) (*pgx.ConnConfig, error) {
	if s.owner == nil {
		return nil, fmt.Errorf("server %s: %w", s.name, isolation.ErrNoOwner)
	}
	cfg := s.owner.Copy()
	cfg.Database = db
	return cfg, nil
}

// connectOwner connects to db of the server as the owner role.
func (s *server) connectOwner(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := s.ownerConfig(db)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := isolation.BecomeOwner(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// down reports whether a recent connection attempt found the server
// unreachable.
func (s *server) down() bool { return time.Now().UnixNano() < s.downUntil.Load() }

// noteDown marks the server down for a while when err says it could not be
// reached, and reports whether it did. A session ended by an administrator
// command (57P01) is the server shutting down, or only its database being
// dropped — a move or delete of that one tenant, by this process or
// another —, and the two look alike: the server counts as down only when
// its own database does not answer either, so that dropping one tenant
// database never turns its neighbours away.
func (s *server) noteDown(ctx context.Context, err error) bool {
	if !unreachable(err) {
		return false
	}
	if sessionEnded(err) && s.answers(ctx) {
		return false
	}
	s.downUntil.Store(time.Now().Add(downFor).UnixNano())
	return true
}

// probeTimeout bounds answers.
const probeTimeout = time.Second

// answers reports whether the server's own database answers a ping within
// probeTimeout (the caller's cancellation aside: the verdict is the
// server's, not the request's).
func (s *server) answers(ctx context.Context) bool {
	q, err := s.reader()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	return q.Ping(ctx) == nil
}

// sessionEnded reports whether err is a session ended by an administrator
// command: pg_terminate_backend, or a fast shutdown.
func sessionEnded(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57P01"
}

func (s *server) close() {
	s.once.Do(func() {}) // no pools may open from now on
	if s.ownerPool != nil {
		s.ownerPool.Close()
	}
	if s.appPool != nil {
		s.appPool.Close()
	}
}

// unreachable reports whether err means the server could not be reached
// at all, or is starting or shutting down: not a refusal of the request.
func unreachable(err error) bool {
	if errors.Is(err, errNoSlot) {
		return false // waiting for the budget, the server untried
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin/crash shutdown, cannot connect now
			return true
		}
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) && pgconn.Timeout(err)
}
