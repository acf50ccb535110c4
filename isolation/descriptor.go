package isolation

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Descriptor is what a strategy package tells the process about itself
// before anything is built: its name, its configuration and how to build
// it. Each strategy package exports one (rls.Descriptor, …); app holds the
// list, and everything that names strategies — the isolation.strategy
// key and its allowed values, the CLI's help, the OpenAPI and Helm enums
// — derives from it.
type Descriptor struct {
	// Name is the strategy's name, as configured in isolation.strategy and
	// recorded per tenant: lower-case letters, never changed once tenants
	// carry it.
	Name string
	// Summary says in a few words how the strategy keeps tenants apart,
	// for help texts.
	Summary string
	// Config returns a new configuration holding the defaults, read from
	// the keys under isolation.<Name> (a pointer to a struct whose koanf
	// tags are the keys); nil when the strategy takes none.
	Config func() Config
	// New builds the strategy from what every strategy shares and its
	// loaded, validated configuration (nil when Config is). It contacts
	// no server; an error means the configuration cannot work.
	New func(deps Deps, cfg Config) (Strategy, error)
}

// Config is a strategy's configuration, loaded by koanf from the keys
// under isolation.<name>.
type Config interface {
	// Validate returns nil, or every bad value at once as a ConfigErrors.
	Validate() error
}

// ConfigError is one bad value of a strategy's configuration. Key is
// relative to the strategy's section ("max_connections" for
// isolation.database.max_connections).
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ConfigErrors is every bad value of a strategy's configuration.
type ConfigErrors []*ConfigError

func (e ConfigErrors) Error() string {
	msg := ""
	for i, ce := range e {
		if i > 0 {
			msg += "; "
		}
		msg += ce.Error()
	}
	return msg
}

// Add records that key is bad, and why.
func (e *ConfigErrors) Add(key, format string, args ...any) {
	*e = append(*e, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Err returns e, or nil when it holds nothing.
func (e ConfigErrors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// Deps is what the process gives every strategy it builds. Any pool may be
// nil in a process that does not need it (a serve without
// database.migrate_url has no owner pool); the methods that need it then
// return ErrNoOwner or ErrNoApp.
type Deps struct {
	// App is the serving role's pool on the control-plane database
	// (database.url).
	App *pgxpool.Pool
	// Owner is a pool whose sessions act as the owner role
	// (database.migrate_url).
	Owner *pgxpool.Pool
	// URL and MigrateURL are the DSNs of App and Owner, for strategies
	// that connect elsewhere with the same credentials.
	URL, MigrateURL string
	// PoolConfig turns a serving DSN into a pool configuration fit for
	// the pooler in front of PostgreSQL (database.pooler).
	PoolConfig func(dsn string) (*pgxpool.Config, error)
	// Citus is database.citus: CitusAuto, CitusOn or CitusOff.
	Citus string
	// System says whether the system role is configured (system.enabled).
	System bool
	// MigrateParallelism is isolation.migrate_parallelism: how many
	// tenants bulkhead migrate migrates at once.
	MigrateParallelism int
	// Logger receives what a strategy cannot return.
	Logger *slog.Logger
	// Control is the control plane as strategies may read it. It
	// implements every interface a strategy package declares for that
	// (database.Directory): a strategy asserts the one it declares.
	Control any
}

// Shared is the optional capability of a strategy whose tenants keep
// their rows in shared tables, told apart by tenant_id alone (rls). The
// system role's usage report counts such tenants in one pass per table
// rather than tenant by tenant.
type Shared interface {
	// SharedSchema is the schema of the shared tenant tables.
	SharedSchema() string
}

// TableUsage is one tenant's share of one tenant table.
type TableUsage struct {
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
}

// SharedUsage counts, in tx, the rows and bytes (pg_column_size of each
// row) of every tenant in every tenant table of schema, by tenant and
// table. tx must see every tenant's rows: the system role's, which
// bypasses RLS.
func SharedUsage(ctx context.Context, tx pgx.Tx, schema string) (map[uuid.UUID]map[string]TableUsage, error) {
	tables, err := TenantTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	out := map[uuid.UUID]map[string]TableUsage{}
	for _, table := range tables {
		rows, err := tx.Query(ctx, `SELECT tenant_id, count(*), COALESCE(sum(pg_column_size(t.*)), 0)::bigint FROM `+
			pgx.Identifier{schema, table}.Sanitize()+` t GROUP BY tenant_id`)
		if err != nil {
			return nil, fmt.Errorf("usage of %s: %w", table, err)
		}
		var id uuid.UUID
		var u TableUsage
		_, err = pgx.ForEachRow(rows, []any{&id, &u.Rows, &u.Bytes}, func() error {
			if out[id] == nil {
				out[id] = map[string]TableUsage{}
			}
			out[id][table] = u
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("usage of %s: %w", table, err)
		}
	}
	return out, nil
}

// SystemGranter is the optional capability of a strategy whose storage the
// system role reads outside any tenant binding (rls's shared tables). The
// control plane's migrate calls it when the system role is configured.
type SystemGranter interface {
	// GrantSystem grants the system role what it reads of the strategy's
	// storage, and nothing else. It needs owner privilege.
	GrantSystem(ctx context.Context) error
}
