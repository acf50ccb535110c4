package schema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

var _ isolation.OwnerRunner = (*Strategy)(nil)

// RunOwner runs fn in an owner transaction bound to t with t's schema on
// the search_path.
func (s *Strategy) RunOwner(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	name := Name(t.ID)
	if t.Placement != "" && t.Placement != name {
		return fmt.Errorf("bind %s: placement %q is not its schema %s", t, t.Placement, name)
	}
	opts, err := isolation.Bind(t.ID, isolation.SearchPath(name))
	if err != nil {
		return err
	}
	return pgx.BeginTxFunc(ctx, s.owner, opts, fn)
}
