package database

// Lifecycle: provision, deprovision and migrate a tenant's database.

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// Provision creates t's database on the server with the fewest tenants
// (skipping servers that cannot be reached), or on t.Server when that is
// set, cloned from the template, and lets only the serving role connect
// to it.
func (s *Strategy) Provision(ctx context.Context, t isolation.Tenant) (isolation.Tenant, error) {
	if t.ID == uuid.Nil {
		return t, isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	servers, err := s.byLoad(ctx)
	if err != nil {
		return t, err
	}
	if t.Server != "" {
		srv := s.servers[t.Server]
		if srv == nil {
			return t, fmt.Errorf("server %q is not configured in isolation.database.servers", t.Server)
		}
		servers = []*server{srv}
	}
	var errs []error
	for _, srv := range servers {
		srv.placing.Add(1)
		err := s.create(ctx, srv, db)
		srv.placing.Add(-1)
		if err == nil {
			t.Strategy, t.Server, t.Placement = isolation.Database, srv.name, db
			return t, nil
		}
		if !(unreachable(err) || errors.Is(err, errNoTemplate)) || ctx.Err() != nil {
			return t, fmt.Errorf("server %s: %w", srv.name, err)
		}
		s.log.Warn("cannot place a tenant on this server; trying the next", "server", srv.name, "tenant", t.Slug, "err", err)
		errs = append(errs, fmt.Errorf("server %s: %w", srv.name, err))
	}
	return t, fmt.Errorf("%w: no server can take it: %w", isolation.ErrUnavailable, errors.Join(errs...))
}

// create clones the template into db on srv. Connections are refused
// until PUBLIC's CONNECT and TEMPORARY are revoked and CONNECT is granted
// to the serving role. On error it drops what it created.
func (s *Strategy) create(ctx context.Context, srv *server, db string) error {
	owner, err := srv.ownerDB()
	if err != nil {
		return err
	}
	ident := pgx.Identifier{db}.Sanitize()
	_, err = owner.Exec(ctx, `CREATE DATABASE `+ident+` TEMPLATE `+pgx.Identifier{TemplateName()}.Sanitize()+
		` OWNER `+pgx.Identifier{isolation.OwnerRole}.Sanitize()+` ALLOW_CONNECTIONS false`)
	if err != nil {
		if missingDatabase(err) {
			return fmt.Errorf("template %s: %w", TemplateName(), errNoTemplate)
		}
		return fmt.Errorf("create database %s: %w", db, err)
	}
	// One simple-protocol message: an implicit transaction, all or nothing.
	_, err = owner.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+ident+` FROM PUBLIC; `+
		`GRANT CONNECT ON DATABASE `+ident+` TO `+pgx.Identifier{isolation.AppRole}.Sanitize()+`; `+
		`ALTER DATABASE `+ident+` WITH ALLOW_CONNECTIONS true`)
	if err != nil {
		err = fmt.Errorf("grant on database %s: %w", db, err)
		if derr := s.drop(context.WithoutCancel(ctx), srv, db); derr != nil {
			err = errors.Join(err, derr)
		}
		return err
	}
	return nil
}

// Deprovision closes t's pool and drops its database, ending whatever
// sessions it still has. With no server recorded it drops the database
// wherever it is.
func (s *Strategy) Deprovision(ctx context.Context, t isolation.Tenant) error {
	if t.ID == uuid.Nil {
		return isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	if t.Placement != "" && t.Placement != db {
		return fmt.Errorf("placement %q is not its database %s", t.Placement, db)
	}
	servers := s.order
	if t.Server != "" {
		srv := s.servers[t.Server]
		if srv == nil {
			return fmt.Errorf("server %q is not configured in isolation.database.servers", t.Server)
		}
		servers = []*server{srv}
	}
	for _, srv := range servers {
		s.pools.remove(poolKey{srv.name, db})
		if err := s.drop(ctx, srv, db); err != nil {
			return err
		}
	}
	return nil
}

// drop drops db on srv, if it exists, forcing its sessions off: it closes
// the database to new connections, terminates its client sessions and
// drops it, which waits for them to end and stops autovacuum there.
//
// Not DROP DATABASE … WITH (FORCE): run by a role that is not a superuser,
// it refuses whenever an autovacuum worker is in the database, since the
// worker belongs to no role the owner is a member of.
func (s *Strategy) drop(ctx context.Context, srv *server, db string) error {
	owner, err := srv.ownerDB()
	if err != nil {
		return err
	}
	ident := pgx.Identifier{db}.Sanitize()
	_, err = owner.Exec(ctx, `ALTER DATABASE `+ident+` ALLOW_CONNECTIONS false`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("close database %s on server %s: %w", db, srv.name, err)
	}
	if _, err := owner.Exec(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()`, db); err != nil {
		return fmt.Errorf("end the sessions of database %s on server %s: %w", db, srv.name, err)
	}
	if _, err := owner.Exec(ctx, `DROP DATABASE IF EXISTS `+ident); err != nil {
		return fmt.Errorf("drop database %s on server %s: %w", db, srv.name, err)
	}
	return nil
}

// Migrate brings t's database to the tenant migration head, as the owner,
// grants the serving role DML on its tenant tables again, and installs
// the move fence's function where it is missing or out of date (a
// database cloned from the template of an earlier release). It returns
// the version reached.
func (s *Strategy) Migrate(ctx context.Context, t isolation.Tenant) (int64, error) {
	srv, db, err := s.locate(t)
	if err != nil {
		return 0, err
	}
	cfg, err := srv.ownerConfig(db)
	if err != nil {
		return 0, err
	}
	// One connection for the version check, goose and the grants: a
	// backend start in a tenant database is most of what a migration
	// that has little to do costs.
	odb := isolation.OwnerDB(cfg, schema)
	defer odb.Close()
	var v int64
	connected := false
	err = isolation.OnOwnerConn(ctx, odb, func(conn *pgx.Conn) error {
		connected = true
		v, err = isolation.TenantVersion(ctx, conn, schema)
		return err
	})
	if err != nil && !connected {
		return 0, fmt.Errorf("connect to %s on server %s: %w", db, srv.name, err)
	}
	if err != nil {
		return 0, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
	}
	if v != migrations.Tenant.Head() {
		if v, err = isolation.MigrateTenantTablesOn(ctx, odb, db, schema); err != nil {
			return v, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
		}
	}
	err = isolation.OnOwnerConn(ctx, odb, func(conn *pgx.Conn) error {
		return isolation.GrantTenantTables(ctx, conn, schema, isolation.AppRole, isolation.FenceDatabaseDDL(isolation.AppRole))
	})
	if err != nil {
		return v, fmt.Errorf("database %s on server %s: %w", db, srv.name, err)
	}
	return v, nil
}
