// Package schema is the schema-per-tenant isolation strategy (profile
// regulated): each tenant gets a schema and a NOLOGIN role, both named from
// its UUID, and holds the tenant tables in that schema. Only the tenant's
// role may use the schema, and the serving role, NOINHERIT, holds none of
// the tenant roles' privileges until a tenant transaction runs SET LOCAL
// ROLE. So a query naming another tenant's schema is refused, and a
// search_path pointing at it finds nothing there (PostgreSQL leaves a
// schema the role may not use out of the effective path); the tables keep
// their tenant_id column and forced Row-Level Security policy, a second
// wall behind the first.
//
// On Citus, each tenant schema is a distributed schema (schema-based
// sharding): its tables form one shard group on one worker. Citus opens
// the connections to that worker as the current role, the tenant's role
// after SET ROLE, so there tenant roles are LOGIN, without a password,
// and the workers admit only the coordinator (docs/DESIGN.md).
package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Strategy is the schema-per-tenant strategy. It is safe for concurrent use.
type Strategy struct {
	app   *pgxpool.Pool
	owner *pgxpool.Pool
	opts  isolation.Options
	// migrators migrate tenant schemas on owner sessions kept from one
	// schema to the next; nil without the owner pool.
	migrators *isolation.Migrators
	// citus is whether the database is a Citus coordinator: on one, Run
	// keeps no worker connection past its transaction (see
	// uncachedWorkerConns) and binds with SET LOCAL only.
	citus isolation.CitusProbe
	// prepared is whether the serving pool prepares its statements and
	// keeps them (no transaction-mode pooler between): only then does a
	// generic plan get used again (GenericPlans).
	prepared bool
}

// uncachedWorkerConns ends a tenant transaction's connections to the
// Citus workers with the transaction. Citus reaches the workers as the
// current role, the tenant's, and keeps one connection per worker and
// role open in each serving connection after a transaction
// (citus.max_cached_conns_per_worker, per role): with a pool of N
// connections serving T tenants that is up to N × T connections on each
// worker, which ran the workers out of connection slots at 200 tenants
// (make bench/citus: "remaining connection slots are reserved", half the
// requests failed). Uncached, a worker holds at most one connection per
// running tenant transaction. Read by Citus when the transaction ends,
// before its SET LOCALs are undone.
var uncachedWorkerConns = isolation.Statement("SET LOCAL citus.max_cached_conns_per_worker = 0")

var _ isolation.Strategy = (*Strategy)(nil)

// Descriptor describes the strategy to the registry. It takes no
// configuration of its own.
var Descriptor = isolation.Descriptor{
	Name:    isolation.Schema,
	Summary: "a schema and a role per tenant",
	New: func(d isolation.Deps, _ isolation.Config) (isolation.Strategy, error) {
		return New(d.App, d.Owner, isolation.WithCitus(d.Citus), isolation.WithMigrateParallelism(d.MigrateParallelism)), nil
	},
}

// New returns the strategy serving with app (the serving role's pool) and
// provisioning with owner (a pool whose sessions act as the owner role,
// which has CREATEROLE). Either may be nil in a process that does not need
// it; the methods that need the missing one then return an error. Close
// closes the owner sessions it keeps for migrating.
func New(app, owner *pgxpool.Pool, opts ...isolation.Option) *Strategy {
	s := &Strategy{app: app, owner: owner, opts: isolation.NewOptions(opts...)}
	s.prepared = app != nil && isolation.PreparesStatements(app.Config().ConnConfig)
	if owner != nil {
		// As many sessions as migrate at once, kept while tenants keep
		// coming: bulkhead migrate lends each to the next tenant at once.
		s.migrators = isolation.NewMigrators(owner.Config().ConnConfig, s.opts.MigrateParallelism, migratorIdle)
	}
	return s
}

// migratorIdle is how long an owner migration session is kept idle for the
// next tenant before it is closed.
const migratorIdle = 10 * time.Second

// Close closes the owner sessions kept for migrating (those migrating now
// as they finish). The pools are the caller's. It is idempotent.
func (s *Strategy) Close() {
	if s.migrators != nil {
		s.migrators.Close()
	}
}

// MigratorStats reports the owner migration sessions the strategy opened,
// reused and holds.
func (s *Strategy) MigratorStats() isolation.MigratorStats {
	if s.migrators == nil {
		return isolation.MigratorStats{}
	}
	return s.migrators.Stats()
}

// prefix starts every tenant schema and role name. Names are the prefix and
// the 32 hex digits of the tenant id: 34 characters, well within
// PostgreSQL's 63, and never anything a user typed.
const prefix = "t_"

// Name returns the name of the schema and of the role of the tenant id. It
// derives only from the UUID; callers still quote it with pgx.Identifier.
func Name(id uuid.UUID) string {
	return prefix + strings.ReplaceAll(id.String(), "-", "")
}

// namePattern matches tenant schema and role names, as a POSIX regular
// expression for the catalog queries.
const namePattern = `^t_[0-9a-f]{32}$`

// Name returns isolation.Schema.
func (s *Strategy) Name() string { return isolation.Schema }

// Setup checks what every tenant of this strategy relies on: the owner may
// create roles, and the serving role is NOINHERIT, so that membership in a
// tenant role grants it nothing outside a tenant transaction. Tenant
// schemas share nothing else. It needs the owner pool.
func (s *Strategy) Setup(ctx context.Context) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	var createRole, appInherits bool
	err := s.owner.QueryRow(ctx, `
		SELECT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = $1),
		       (SELECT rolinherit FROM pg_roles WHERE rolname = $2)`,
		isolation.OwnerRole, isolation.AppRole).Scan(&createRole, &appInherits)
	if err != nil {
		return fmt.Errorf("read roles: %w", err)
	}
	if !createRole {
		return fmt.Errorf("role %s lacks CREATEROLE, which tenant roles need: ALTER ROLE %s CREATEROLE",
			isolation.OwnerRole, pgx.Identifier{isolation.OwnerRole}.Sanitize())
	}
	if appInherits {
		return fmt.Errorf("role %s is INHERIT and would hold every tenant's privileges: ALTER ROLE %s NOINHERIT",
			isolation.AppRole, pgx.Identifier{isolation.AppRole}.Sanitize())
	}
	citus, err := isolation.UseCitus(ctx, s.owner, s.opts.Citus)
	if err != nil {
		return err
	}
	s.citus.Learn(citus)
	return nil
}

// Provision creates t's role and schema, migrates the tenant tables into
// the schema and grants the role DML on them. The role is NOLOGIN (LOGIN
// on Citus, see the package comment) and granted to the serving role,
// which gets its privileges only by SET ROLE; the schema is owned by the
// owner role, and only the tenant's role may use it. On Citus the schema
// is created distributed. On error nothing of t is left behind; a name
// already taken (t was provisioned before) is an error and left alone.
func (s *Strategy) Provision(ctx context.Context, t isolation.Tenant) (isolation.Tenant, error) {
	if s.owner == nil {
		return t, isolation.ErrNoOwner
	}
	if t.ID == uuid.Nil {
		return t, isolation.ErrNoTenant
	}
	citus, err := isolation.UseCitus(ctx, s.owner, s.opts.Citus)
	if err != nil {
		return t, err
	}
	s.citus.Learn(citus)
	name := Name(t.ID)
	ident := pgx.Identifier{name}.Sanitize()
	owner, app := pgx.Identifier{isolation.OwnerRole}.Sanitize(), pgx.Identifier{isolation.AppRole}.Sanitize()
	login := "NOLOGIN"
	var setup, unpropagated []string
	if citus {
		login = "LOGIN"
		// Transaction-local: only this schema becomes distributed.
		setup = append(setup, "SELECT set_config('citus.enable_schema_based_sharding', 'on', true)")
		// The serving role's membership in the tenant's role is the
		// coordinator's alone: SET ROLE runs there, and Citus reaches the
		// workers logged in as the tenant's role itself, which needs no
		// membership. So the GRANT, last in the transaction, is not
		// propagated. Propagated, Citus would first make sure that every
		// role the serving role is a member of exists on the workers,
		// judging by this database's own record of distributed objects.
		// The serving role is global, and so are its memberships: Citus
		// would find the tenant roles of every other database on the
		// cluster (another deployment's; the tests' databases side by
		// side) unrecorded here and re-create them on the workers with
		// ALTER ROLE ... NOSUPERUSER, which only a superuser may run.
		// Names unique per database would not help: the membership, not
		// the name, crosses databases.
		unpropagated = append(unpropagated, "SELECT set_config('citus.enable_ddl_propagation', 'off', true)")
	}
	// One simple-protocol message, so one implicit transaction: all of it
	// or none, in one round trip.
	ddl := strings.Join(append(append(setup,
		"CREATE ROLE "+ident+" "+login+" NOINHERIT",
		"CREATE SCHEMA "+ident+" AUTHORIZATION "+owner,
		"REVOKE ALL ON SCHEMA "+ident+" FROM PUBLIC",
		"GRANT USAGE ON SCHEMA "+ident+" TO "+ident,
	), append(unpropagated, "GRANT "+ident+" TO "+app)...), "; ")
	if _, err := s.owner.Exec(ctx, ddl); err != nil {
		return t, fmt.Errorf("create schema and role of %s: %w", t, err)
	}
	if _, err := s.migrate(ctx, name, citus); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := s.drop(dctx, name); derr != nil {
			return t, fmt.Errorf("provision %s: %w (and undo: %w)", t, err, derr)
		}
		return t, fmt.Errorf("provision %s: %w", t, err)
	}
	t.Strategy, t.Server, t.Placement = isolation.Schema, "", name
	return t, nil
}

// Deprovision drops t's schema with everything in it, revokes whatever its
// role was granted in the database (DROP OWNED), and drops the role, in one
// transaction: on error nothing is dropped, and the error names what still
// holds the role (a grant the owner role cannot revoke, such as one on the
// database by its owner, or one in another database). What is already
// gone is skipped.
func (s *Strategy) Deprovision(ctx context.Context, t isolation.Tenant) error {
	if s.owner == nil {
		return isolation.ErrNoOwner
	}
	if t.ID == uuid.Nil {
		return isolation.ErrNoTenant
	}
	if err := s.drop(ctx, Name(t.ID)); err != nil {
		return fmt.Errorf("deprovision %s: %w", t, err)
	}
	return nil
}

// drop removes the schema and the role called name.
func (s *Strategy) drop(ctx context.Context, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	return pgx.BeginTxFunc(ctx, s.owner, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, name).Scan(&exists); err != nil {
			return fmt.Errorf("look up role %s: %w", name, err)
		}
		// DROP OWNED revokes every grant to the role in this database,
		// wherever a mistake put one, so that DROP ROLE cannot fail on it.
		// It needs membership in the role, held for this transaction only:
		// the membership goes with the role. It is granted before the
		// schema is dropped: on Citus, dropping a distributed schema
		// drops its tables one by one, each by its owner, and a table a
		// mistake handed to the tenant's role would stop it.
		owner := pgx.Identifier{isolation.OwnerRole}.Sanitize()
		if exists {
			if _, err := tx.Exec(ctx, "GRANT "+ident+" TO "+owner); err != nil {
				return fmt.Errorf("GRANT %s TO %s: %w", ident, owner, err)
			}
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", name, err)
		}
		if !exists {
			return nil
		}
		for _, stmt := range []string{
			"DROP OWNED BY " + ident,
			"DROP ROLE " + ident,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Detail != "" {
					// Names what still holds the role: a grant made by
					// a role the owner cannot revoke for, say.
					return fmt.Errorf("%s: %w: %s", stmt, err, pgErr.Detail)
				}
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		return nil
	})
}

// Migrate brings t's schema to the tenant migration head (goose, with the
// version table in the schema) and grants t's role DML on every tenant
// table again, so that a table a migration added is reachable. A schema at
// head is only re-granted (goose applies nothing). It returns the version
// reached.
func (s *Strategy) Migrate(ctx context.Context, t isolation.Tenant) (int64, error) {
	if s.owner == nil {
		return 0, isolation.ErrNoOwner
	}
	if t.ID == uuid.Nil {
		return 0, isolation.ErrNoTenant
	}
	name := Name(t.ID)
	if t.Placement != "" && t.Placement != name {
		return 0, fmt.Errorf("migrate %s: placement %q is not its schema %s", t, t.Placement, name)
	}
	// Whether the schema exists and the database is a Citus coordinator,
	// in one round trip: bulkhead migrate asks for every tenant.
	var exists, installed bool
	if err := s.owner.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1), `+isolation.CitusQuery, name).Scan(&exists, &installed); err != nil {
		return 0, fmt.Errorf("migrate %s: %w", t, err)
	}
	if !exists {
		return 0, fmt.Errorf("migrate %s: schema %s does not exist", t, name)
	}
	citus, err := isolation.CitusFor(s.opts.Citus, installed)
	if err != nil {
		return 0, err
	}
	return s.migrate(ctx, name, citus) // its errors name the schema
}

// migrate migrates schema name and grants its role DML on its tables. On
// Citus (citus, as UseCitus says) it also makes the schema distributed and
// its role LOGIN, for a tenant provisioned before the database became a
// Citus coordinator.
//
// goose runs on an owner session kept from one schema to the next, and
// is asked even when the schema may be at head: it finds that out itself
// in a few round trips, and the callers (bulkhead migrate, provisioning)
// ask for schemas that are behind.
func (s *Strategy) migrate(ctx context.Context, name string, citus bool) (int64, error) {
	v, err := s.migrators.Migrate(ctx, name)
	if err != nil {
		return v, err
	}
	s.citus.Learn(citus)
	if citus {
		if err := isolation.DistributeSchema(ctx, s.owner, name); err != nil {
			return v, err
		}
		var login bool
		if err := s.owner.QueryRow(ctx, `SELECT rolcanlogin FROM pg_roles WHERE rolname = $1`, name).Scan(&login); err != nil {
			return v, fmt.Errorf("read role %s: %w", name, err)
		}
		if !login {
			if _, err := s.owner.Exec(ctx, `ALTER ROLE `+pgx.Identifier{name}.Sanitize()+` LOGIN`); err != nil {
				return v, fmt.Errorf("let role %s log in on the Citus workers: %w", name, err)
			}
		}
	}
	if err := isolation.GrantTenantTables(ctx, s.owner, name, name); err != nil {
		return v, err
	}
	return v, nil
}

// Run runs fn in a transaction of the serving pool bound to t: the tenant
// setting, the tenant's role and a search_path of its schema and, last,
// pg_temp are all SET LOCAL, folded into the transaction's BEGIN, and so
// is plan_cache_mode: the transaction's statements use their generic plan
// (isolation.GenericPlans), where statements are prepared and kept and not
// on Citus.
//
// Tenants may sit at different migration versions, and a statement pgx
// prepared for one tenant's table shape then fails on another's with
// "cached plan must not change result type". pgx drops the stale statement
// on that error, and Run returns it wrapped in isolation.ErrStalePlan: the
// Registry runs a retryable fn again.
func (s *Strategy) Run(ctx context.Context, t isolation.Tenant, fn func(pgx.Tx) error) error {
	if s.app == nil {
		return isolation.ErrNoApp
	}
	citus, err := s.citus.Citus(ctx, s.app, s.opts.Citus)
	if err != nil {
		return err
	}
	stmts, err := bind(ctx, t, s.prepared && !citus)
	if err != nil {
		return err
	}
	if citus {
		stmts = append(isolation.Unfolded(stmts), uncachedWorkerConns)
	}
	conn, err := s.app.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// A statement's plan holds for one tenant's search_path and role: a
	// one-statement read is prepared once per tenant a connection serves,
	// and planned once (GenericPlans, in the binding): with 1,000 tenants
	// over the pool, each such statement runs only now and then on each
	// backend, and planning its first five executions one by one cost a
	// third of the strategy's point-read throughput.
	return isolation.MarkStale(isolation.RunOnScoped(ctx, conn.Conn(), Name(t.ID), stmts, fn))
}

// bind returns the steps binding t after BEGIN, bounded as ctx says, with
// generic plans when generic. Not behind a transaction-mode pooler, where
// every statement is parsed anew and a generic plan would only lose what
// the parameters' values tell the planner; nor on Citus: its planner
// routes a statement of a distributed schema by its parameters' values,
// and fails a generic plan of some ("could not create distributed plan").
func bind(ctx context.Context, t isolation.Tenant, generic bool) ([]isolation.Step, error) {
	if t.ID == uuid.Nil {
		return nil, isolation.ErrNoTenant
	}
	name := Name(t.ID)
	if t.Placement != "" && t.Placement != name {
		// The record disagrees with the derivation: refuse rather than
		// guess which one is right.
		return nil, fmt.Errorf("bind %s: placement %q is not its schema %s", t, t.Placement, name)
	}
	steps := []isolation.Step{isolation.SetRole(name), isolation.SearchPath(name)}
	if generic {
		steps = append(steps, isolation.GenericPlans())
	}
	return isolation.BindStatements(ctx, t.ID, steps...)
}

// Ready reports whether the database answers. Tenants at different
// migration versions still serve, so versions are migrate status's concern,
// not readiness's.
func (s *Strategy) Ready(ctx context.Context) (isolation.Degraded, error) {
	p, err := s.any()
	if err != nil {
		return nil, err
	}
	if err := p.Ping(ctx); err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	return nil, nil
}

// any returns the serving pool, or the owner's when there is none.
func (s *Strategy) any() (*pgxpool.Pool, error) {
	switch {
	case s.app != nil:
		return s.app, nil
	case s.owner != nil:
		return s.owner, nil
	}
	return nil, isolation.ErrNoApp
}
