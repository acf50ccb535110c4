package isolationtest

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// ForTenant returns s with every transaction of the tenant called slug run
// through wrap, which gets the transaction and the work it should do:
// tests make one tenant misbehave with it (sleep in a statement, stay idle,
// hold its connection) while the others go through s unchanged.
func ForTenant(s isolation.Runner, slug string, wrap func(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error) isolation.Runner {
	return &forTenant{inner: s, slug: slug, wrap: wrap}
}

type forTenant struct {
	inner isolation.Runner
	slug  string
	wrap  func(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error
}

func (f *forTenant) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error, opts ...isolation.RunOption) error {
	if t.Slug != f.slug {
		return f.inner.Run(ctx, t, fn, opts...)
	}
	// wrap may send statements of its own beside fn's: not one read.
	return f.inner.Run(isolation.NotOneRead(ctx), t, func(tx pgx.Tx) error { return f.wrap(ctx, tx, fn) }, opts...)
}
