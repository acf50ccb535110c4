// Package isolation is the contract by which Bulkhead keeps tenants apart.
//
// A Strategy knows how to give a tenant storage and how to run work inside
// it. Handlers and stores never learn which strategy is active: they receive
// a pgx.Tx that is already bound to one tenant, from Strategy.Run, which is
// the only way to touch tenant data. The implementations live in the
// packages below this one (rls, schema, database); the contract kit of
// the seam every one of them passes is strategytest, and the conformance
// suite over the API is isolationtest.
package isolation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Strategy names, as recorded per tenant and configured in isolation.strategy.
const (
	RLS      = "rls"
	Schema   = "schema"
	Database = "database"
)

// SharedSchema holds the tenant tables that tenants of the RLS strategy
// share, their rows told apart by tenant_id alone.
const SharedSchema = "public"

// Role names. The owner runs DDL and owns every table; the serving role does
// DML under Row-Level Security and owns nothing; the system role bypasses RLS
// for audited cross-tenant jobs and exists only when configured.
const (
	OwnerRole  = "bulkhead_owner"
	AppRole    = "bulkhead_app"
	SystemRole = "bulkhead_system"
)

// Setting is the transaction-local setting that carries the bound tenant.
const Setting = "app.tenant_id"

// Tenant is a tenant as the isolation layer sees it: its id, which every
// binding and every generated name derives from, and where it lives.
type Tenant struct {
	ID   uuid.UUID
	Slug string
	// Strategy is the strategy the tenant was provisioned with.
	Strategy string
	// Server names the server holding the tenant (database strategy).
	Server string
	// Placement is the tenant's schema or database name, or empty.
	Placement string
}

func (t Tenant) String() string { return t.Slug + " (" + t.ID.String() + ")" }

// Strategy is one way of keeping tenants apart. Implementations are safe for
// concurrent use. Methods that create or drop storage need owner privilege
// (database.migrate_url) and return ErrNoOwner without it.
type Strategy interface {
	// Name is the strategy's name: RLS, Schema or Database.
	Name() string
	// Setup prepares what the strategy's tenants share (shared tables, a
	// template database). It is idempotent and needs owner privilege.
	Setup(ctx context.Context) error
	// Provision gives t storage at the current migration head and returns t
	// with its Strategy, Server and Placement set. On error it leaves nothing
	// behind. Provisioning a tenant that has storage already either
	// succeeds or fails, and leaves that storage and its rows as they
	// were. The zero tenant is ErrNoTenant.
	Provision(ctx context.Context, t Tenant) (Tenant, error)
	// Deprovision removes every row, schema, role or database of t. Removing
	// what is already gone is not an error. The zero tenant is ErrNoTenant.
	Deprovision(ctx context.Context, t Tenant) error
	// Migrate brings t's storage to the migration head and returns the
	// version it reached; on error the version is what it had reached.
	Migrate(ctx context.Context, t Tenant) (int64, error)
	// Run runs fn in one transaction bound to t and commits it when fn
	// returns nil. The binding is transaction-local and travels in the same
	// network round trip as the transaction's BEGIN, and so do the
	// Bounds ctx carries (WithBounds). It returns ErrUnavailable when no
	// connection to t's storage could be had in time, and an error
	// wrapping ErrStalePlan (MarkStale) when a statement prepared for
	// another shape of the tenant tables failed. It runs fn at most once:
	// retrying is the Registry's policy, not the strategy's. A panic in fn
	// returns the connection (and whatever else Run holds) before it
	// propagates. The zero tenant is ErrNoTenant, and fn is not run. The
	// rest of Bulkhead calls it through Registry.Run only;
	// strategytest.Exercise holds every strategy to this contract.
	Run(ctx context.Context, t Tenant, fn func(pgx.Tx) error) error
	// Verify reads the live catalogs and reports every way the isolation
	// invariants do not hold for this strategy's storage.
	Verify(ctx context.Context) ([]Finding, error)
	// Ready reports whether the strategy can serve: nil, or an error saying
	// what is missing. Degraded reports partial outages that do not stop
	// serving as a whole (a server of the database strategy that is down).
	Ready(ctx context.Context) (Degraded, error)
}

// Degraded names the parts of a strategy that cannot serve, with why; empty
// when everything is healthy.
type Degraded map[string]string

var (
	// ErrNoOwner means an operation needs owner privilege and no owner DSN
	// (database.migrate_url) is configured.
	ErrNoOwner = errors.New("no owner connection: database.migrate_url is not set")
	// ErrNoApp means an operation needs the serving role's connection and
	// no serving DSN (database.url, or a server's url) is configured.
	ErrNoApp = errors.New("no serving connection: database.url (or isolation.database.servers[].url) is not set")
	// ErrNoTenant means work was attempted without a tenant to bind.
	ErrNoTenant = errors.New("no tenant bound")
	// ErrUnavailable means the tenant's storage could not be reached in time;
	// the request may be retried.
	ErrUnavailable = errors.New("tenant storage unavailable")
)

// NotReadyError says why a strategy or the control plane cannot serve, in
// words anyone may read (/readyz answers them to anonymous callers): no
// host, port, role or database error text. Readiness errors of any other
// type are the database's own and go to the log only.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return e.Reason }

// UnknownStrategyError is returned for a strategy name no implementation has.
type UnknownStrategyError struct{ Name string }

func (e *UnknownStrategyError) Error() string {
	return fmt.Sprintf("unknown isolation strategy %q", e.Name)
}

// BeginQuery is the statement string that opens a transaction bound to id,
// then runs the steps extra. It is sent as one simple-protocol message, so
// the binding costs no round trip of its own, and the binding stays a
// statement of its own (Citus propagates SET LOCAL but not set_config).
func BeginQuery(id uuid.UUID, extra ...Step) string {
	q := "BEGIN; " + tenantStep(id).SQL
	for _, s := range extra {
		q += "; " + s.SQL
	}
	return q
}

// Bind returns the transaction options that bind id, for pgx.BeginTx.
func Bind(id uuid.UUID, extra ...Step) (pgx.TxOptions, error) {
	if id == uuid.Nil {
		return pgx.TxOptions{}, ErrNoTenant
	}
	return pgx.TxOptions{BeginQuery: BeginQuery(id, extra...)}, nil
}

// BindRun returns the options of a transaction Strategy.Run opens for id:
// Bind's, with the strategy's own steps (extra), then the steps of the
// Bounds ctx carries (WithBounds), then those of WithStatements (the move
// fence). They all travel in the one BEGIN message, so the bounds cost no
// round trip either.
func BindRun(ctx context.Context, id uuid.UUID, extra ...Step) (pgx.TxOptions, error) {
	bind, err := BindStatements(ctx, id, extra...)
	if err != nil {
		return pgx.TxOptions{}, err
	}
	return BeginOptions(bind), nil
}

// BindStatements returns the steps that follow BEGIN in the transaction
// Strategy.Run opens for id, those of BindRun's BeginQuery one by one: the
// binding, the strategy's own (extra), the Bounds ctx carries, then those
// of WithStatements (the move fence). RunOn sends them.
func BindStatements(ctx context.Context, id uuid.UUID, extra ...Step) ([]Step, error) {
	if id == uuid.Nil {
		return nil, ErrNoTenant
	}
	b, _ := BoundsFrom(ctx)
	bounds, stmts := b.steps(), statementsFrom(ctx)
	out := make([]Step, 0, 1+len(extra)+len(bounds)+len(stmts))
	out = append(out, tenantStep(id))
	out = append(out, extra...)
	out = append(out, bounds...)
	return append(out, stmts...), nil
}

// Bounds are the database-side limits of one transaction of Run, each set
// with SET LOCAL in the transaction's BEGIN query, so that PostgreSQL
// itself ends the work that runs past them and a connection can never hang
// on it. A zero field sets nothing: the server's (or the role's) setting
// holds.
type Bounds struct {
	// Statement is statement_timeout: one statement running longer is
	// cancelled (SQLSTATE 57014).
	Statement time.Duration
	// Lock is lock_timeout: one wait for a lock longer than this fails the
	// statement (SQLSTATE 55P03).
	Lock time.Duration
	// IdleInTransaction is idle_in_transaction_session_timeout: a
	// transaction left idle this long has its session ended by the server
	// (SQLSTATE 25P03), which frees its locks and its connection.
	IdleInTransaction time.Duration
}

// Steps returns the steps setting b, in a fixed order. The values are
// whole milliseconds formatted here, never input; a positive duration
// below a millisecond is one millisecond (0 would turn the timeout off).
func (b Bounds) Steps() []Step { return slices.Clone(b.steps()) }

// steps is Steps, shared: the caller must not change it. A process's
// transactions run under the same Bounds, so the text of their steps is
// built once and kept (lastBounds), not on every transaction.
func (b Bounds) steps() []Step {
	if l := lastBounds.Load(); l != nil && l.b == b {
		return l.steps
	}
	var out []Step
	for _, s := range []struct {
		name string
		d    time.Duration
	}{
		{"statement_timeout", b.Statement},
		{"lock_timeout", b.Lock},
		{"idle_in_transaction_session_timeout", b.IdleInTransaction},
	} {
		if s.d > 0 {
			out = append(out, setMillis(s.name, max(s.d.Milliseconds(), 1)))
		}
	}
	lastBounds.Store(&boundSteps{b: b, steps: slices.Clip(out)})
	return out
}

// lastBounds is the Bounds whose steps were built last, with them.
var lastBounds atomic.Pointer[boundSteps]

type boundSteps struct {
	b     Bounds
	steps []Step
}

type boundsKey struct{}

// WithBounds returns ctx carrying b: the transactions Run opens under it
// are bounded by b (see BindRun).
func WithBounds(ctx context.Context, b Bounds) context.Context {
	return context.WithValue(ctx, boundsKey{}, b)
}

// BoundsFrom returns the Bounds ctx carries, and whether it carries any.
func BoundsFrom(ctx context.Context) (Bounds, bool) {
	b, ok := ctx.Value(boundsKey{}).(Bounds)
	return b, ok
}
