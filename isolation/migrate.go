package isolation

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bulkheadhq/bulkhead/migrations"
)

// OwnerDB opens a database/sql handle, for goose, on cfg acting as the owner
// with search_path set to schema alone (quoted). Close it after use.
func OwnerDB(cfg *pgx.ConnConfig, schema string) *sql.DB {
	cfg = cfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if schema != "" {
		cfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	return stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(BecomeOwner))
}

// MigrateTenantTables applies the tenant migrations to schema of the database
// cfg connects to, as the owner, on a connection of its own, and returns the
// version reached. Concurrent migrators of the same schema wait for each
// other. On error the version is the one reached before the failing
// migration. Migrating many schemas of one database, Migrators keeps the
// connections from one schema to the next.
func MigrateTenantTables(ctx context.Context, cfg *pgx.ConnConfig, schema string) (int64, error) {
	db := OwnerDB(cfg, schema)
	defer db.Close()
	return MigrateTenantTablesOn(ctx, db, cfg.Database, schema)
}

// MigrateTenantTablesOn is MigrateTenantTables over db, an OwnerDB of
// database with search_path schema, which it leaves open: goose takes one
// of its connections and gives it back idle, so a caller that uses db
// before and after (OnOwnerConn) pays for one connection in all.
func MigrateTenantTablesOn(ctx context.Context, db *sql.DB, database, schema string) (int64, error) {
	p, err := migrations.Tenant.Provider(db, LockID(database, schema))
	if err != nil {
		return 0, err
	}
	applied, upErr := p.Up(ctx)
	if upErr == nil && len(applied) > 0 {
		// goose applies the pending migrations in order and refuses to
		// leave an older one out: the last applied is the version reached,
		// and reading it back would cost a round trip per tenant.
		return applied[len(applied)-1].Source.Version, nil
	}
	v, err := p.GetDBVersion(ctx)
	if upErr != nil {
		return v, fmt.Errorf("migrate %s: %w", schema, upErr)
	}
	if err != nil {
		return v, fmt.Errorf("read version of %s: %w", schema, err)
	}
	return v, nil
}

// OnOwnerConn runs fn on a connection of db, an OwnerDB, as the pgx
// connection it is, and gives the connection back to db idle.
func OnOwnerConn(ctx context.Context, db *sql.DB, fn func(*pgx.Conn) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("owner connection: %T is not a pgx connection", dc)
		}
		return fn(sc.Conn())
	})
}

// TenantVersion reads the tenant migration version recorded in schema, 0
// when nothing was applied yet.
func TenantVersion(ctx context.Context, q Querier, schema string) (int64, error) {
	var exists bool
	table := pgx.Identifier{schema, migrations.Tenant.Table}
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table.Sanitize()).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read version of %s: %w", schema, err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	err := q.QueryRow(ctx, `SELECT COALESCE(max(version_id), 0) FROM `+table.Sanitize()+` WHERE is_applied`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read version of %s: %w", schema, err)
	}
	return v, nil
}

// LockID derives the advisory lock id that serialises migrators of one
// schema of one database.
func LockID(database, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("bulkhead migrate\x00" + database + "\x00" + schema))
	return int64(h.Sum64() &^ (1 << 63))
}
