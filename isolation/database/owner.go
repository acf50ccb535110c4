package database

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

var _ isolation.OwnerRunner = (*Strategy)(nil)

// RunOwner runs fn in an owner transaction in t's database, bound to t, on
// a connection of its own that it closes before returning.
func (s *Strategy) RunOwner(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	opts, err := isolation.Bind(t.ID, searchPath)
	if err != nil {
		return err
	}
	srv, db, err := s.locate(t)
	if err != nil {
		return err
	}
	conn, err := srv.connectOwner(ctx, db)
	if err != nil {
		return fmt.Errorf("%w: connect to %s on server %s: %w", isolation.ErrUnavailable, db, srv.name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginTxFunc(ctx, conn, opts, fn)
}
