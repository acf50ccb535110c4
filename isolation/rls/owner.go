package rls

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

var _ isolation.OwnerRunner = (*Strategy)(nil)

// RunOwner runs fn in an owner transaction bound to t over the shared
// tables: the forced policy still keeps it to t's rows.
func (s *Strategy) RunOwner(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	opts, err := isolation.Bind(t.ID, searchPath)
	if err != nil {
		return err
	}
	return pgx.BeginTxFunc(ctx, s.owner, opts, fn)
}
