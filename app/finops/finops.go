// Package finops is Bulkhead's domain: cloud accounts, cost line items and
// budgets, and the store that reads and writes them.
//
// Every method takes the tenant it acts for and runs its SQL through
// isolation.Runner.Run, so it works unchanged on every strategy. The SQL
// keeps its own tenant filter too — the second wall — always written as
// "tenant_id = $1", with the tenant id as the first argument; the isolation
// tests rely on that form to take this wall away and show the database's
// wall holds by itself.
package finops

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Service is the FinOps domain. It is safe for concurrent use.
type Service struct {
	tenancy isolation.Runner
}

// New returns the domain service running its work through tenancy.
func New(tenancy isolation.Runner) *Service {
	return &Service{tenancy: tenancy}
}

// run runs fn bound to t and translates driver errors into store errors.
// fn may run twice (isolation.Retryable): it assigns its results, never
// accumulates them, and reads nothing it cannot read again. Work that
// cannot run twice uses runOnce.
func (s *Service) run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	return store.Translate(s.tenancy.Run(ctx, t, fn, isolation.Retryable()))
}

// runOnce runs fn bound to t, once, and translates driver errors into
// store errors: for fn that consume a stream.
func (s *Service) runOnce(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	return store.Translate(s.tenancy.Run(ctx, t, fn))
}

// read1 runs fn, which sends one statement that only reads, bound to t:
// the binding, the statement and the end of the transaction in one round
// trip (isolation.OneRead).
func (s *Service) read1(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	return s.run(isolation.OneRead(ctx), t, fn)
}

// Page asks for one page of a list: at most Limit items after Cursor.
type Page struct {
	Limit  int
	Cursor string
}

// MaxPageSize bounds Page.Limit; DefaultPageSize is used when it is 0.
const (
	MaxPageSize     = 1000
	DefaultPageSize = 100
)

func (p Page) limit() int {
	if p.Limit <= 0 {
		return DefaultPageSize
	}
	return min(p.Limit, MaxPageSize)
}
