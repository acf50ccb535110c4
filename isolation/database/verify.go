package database

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// Finding codes of this strategy; docs/VERIFY.md lists them. The codes of
// package isolation are reported for each tenant database too, their object
// prefixed with the database and server.
const (
	// CodePublicConnect: PUBLIC has CONNECT or TEMPORARY on a tenant
	// database.
	CodePublicConnect = "database-public-connect"
	// CodeMissing: the control plane records a tenant whose database does
	// not exist.
	CodeMissing = "database-missing"
	// CodeUnchecked: a tenant database the serving role could not connect
	// to, so its tables were not checked.
	CodeUnchecked = "database-unchecked"
	// CodeServerUnreachable: a server that cannot be reached, so its
	// tenant databases were not checked.
	CodeServerUnreachable = "server-unreachable"
)

// verifyParallelism bounds the tenant databases Verify inspects at once.
// Each inspection is one short connection holding a slot of the budget.
const verifyParallelism = 8

// Verify checks the database of every tenant the control plane records for
// this strategy: PUBLIC may neither connect nor create temporary tables
// (database-public-connect), the serving role owns no tenant table there,
// and every tenant table is under forced Row-Level Security with the tenant
// policy. One catalog query per server covers the database privileges; the
// tables are read inside each database, a few databases at a time, as the
// serving role. A server that cannot be reached is a warning, not an
// error: serving starts for the tenants of the others.
func (s *Strategy) Verify(ctx context.Context) ([]isolation.Finding, error) {
	byServer, err := s.tenantDatabases(ctx)
	if err != nil {
		return nil, err
	}
	var (
		mu  sync.Mutex
		out []isolation.Finding
	)
	add := func(fs ...isolation.Finding) {
		mu.Lock()
		out = append(out, fs...)
		mu.Unlock()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(verifyParallelism, s.cfg.MaxConnections))
	for _, srv := range s.order {
		dbs := byServer[srv.name]
		if len(dbs) == 0 {
			continue
		}
		found, present, err := s.checkDatabases(ctx, srv, dbs)
		if err != nil {
			if !unreachable(err) {
				return nil, fmt.Errorf("verify server %s: %w", srv.name, err)
			}
			add(isolation.Finding{Code: CodeServerUnreachable, Severity: isolation.Warning, Object: "server " + srv.name,
				Detail: fmt.Sprintf("the databases of %d tenants were not checked: the server cannot be reached", len(dbs)),
				Fix:    "bring the server back and run bulkhead verify again"})
			continue
		}
		add(found...)
		version, err := s.checkServer(ctx, srv)
		if err != nil {
			return nil, fmt.Errorf("verify server %s: %w", srv.name, err)
		}
		add(version...)
		if srv.app == nil {
			continue // catalogs as the serving role need its DSN
		}
		for _, db := range present {
			g.Go(func() error {
				fs, err := s.checkTables(gctx, srv, db)
				switch {
				case err == nil:
					add(fs...)
				case gctx.Err() != nil:
					return gctx.Err()
				default:
					// One database the serving role cannot read keeps
					// neither the others from being checked nor serving.
					add(isolation.Finding{Code: CodeUnchecked, Severity: isolation.Warning,
						Object: "database " + db + " on server " + srv.name,
						Detail: "its tenant tables could not be checked as " + isolation.AppRole + ": " + err.Error(),
						Fix:    "GRANT CONNECT ON DATABASE " + pgx.Identifier{db}.Sanitize() + " TO " + isolation.AppRole + ", or find why it refuses connections"})
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b isolation.Finding) int {
		return strings.Compare(a.Object+"\x00"+a.Code, b.Object+"\x00"+b.Code)
	})
	return out, nil
}

// tenantDatabases lists the database of every provisioned tenant of this
// strategy, by server name.
func (s *Strategy) tenantDatabases(ctx context.Context) (map[string][]string, error) {
	if s.cfg.Directory == nil {
		return nil, fmt.Errorf("verify: no control plane")
	}
	tenants, err := s.cfg.Directory.Placed(ctx, isolation.Database)
	if err != nil {
		return nil, fmt.Errorf("list tenant databases: %w", err)
	}
	out := map[string][]string{}
	for _, t := range tenants {
		server := t.Server
		if server == "" && len(s.order) == 1 {
			server = s.order[0].name
		}
		out[server] = append(out[server], DBName(t.ID))
	}
	return out, nil
}

// checkDatabases reads the privileges of dbs on srv from its catalog, and
// returns the findings and the databases that exist.
func (s *Strategy) checkDatabases(ctx context.Context, srv *server, dbs []string) ([]isolation.Finding, []string, error) {
	q, err := srv.reader()
	if err != nil {
		return nil, nil, err
	}
	rows, err := q.Query(ctx, `
		SELECT d.datname,
		       has_database_privilege('public', d.oid, 'CONNECT'),
		       has_database_privilege('public', d.oid, 'TEMPORARY')
		FROM pg_database d WHERE d.datname = ANY($1)`, dbs)
	if err != nil {
		srv.noteDown(ctx, err)
		return nil, nil, err
	}
	var (
		out           []isolation.Finding
		present       []string
		name          string
		connect, temp bool
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &connect, &temp}, func() error {
		present = append(present, name)
		var what []string
		if connect {
			what = append(what, "CONNECT")
		}
		if temp {
			what = append(what, "TEMPORARY")
		}
		if len(what) > 0 {
			out = append(out, isolation.Finding{Code: CodePublicConnect, Severity: isolation.Critical,
				Object: "database " + name + " on server " + srv.name,
				Detail: "PUBLIC has " + strings.Join(what, " and ") + " on a tenant database: any role may connect to it",
				Fix:    "REVOKE CONNECT, TEMPORARY ON DATABASE " + pgx.Identifier{name}.Sanitize() + " FROM PUBLIC"})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, db := range dbs {
		if !slices.Contains(present, db) {
			out = append(out, isolation.Finding{Code: CodeMissing, Severity: isolation.Warning,
				Object: "database " + db + " on server " + srv.name,
				Detail: "the control plane records a tenant whose database does not exist",
				Fix:    "delete the tenant (bulkhead tenant delete), or restore its database"})
		}
	}
	return out, present, nil
}

// checkTables runs, inside db as the serving role, the checks every
// database the serving role serves from gets (verify.Database: tenant
// tables it can reach, their owners, grants, views, functions, the
// relations, schemas and privileges it may use) and the tenant-table
// checks of public, reachable or not. The serving role itself is global
// to the cluster and checked once, on the control database; so is the
// server version, once per server; a tenant database has no control
// plane to check.
func (s *Strategy) checkTables(ctx context.Context, srv *server, db string) ([]isolation.Finding, error) {
	conn, err := s.connectApp(ctx, srv, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	all, err := verify.Database(ctx, conn)
	if err != nil {
		return nil, err
	}
	tables, err := verify.TenantTables(ctx, conn, schema)
	if err != nil {
		return nil, err
	}
	out := verify.Dedupe(append(all, tables...))
	for i := range out {
		out[i].Object = "database " + db + " on server " + srv.name + ": " + out[i].Object
		out[i].Fix = "in database " + db + ": " + out[i].Fix
	}
	return out, nil
}

// checkServer reports the version findings of srv, unless it is the server
// of the control plane, which verify.All checks.
func (s *Strategy) checkServer(ctx context.Context, srv *server) ([]isolation.Finding, error) {
	if c := s.cfg.Home; c != nil && srv.app != nil {
		if a := srv.app.ConnConfig; c.Host == a.Host && c.Port == a.Port {
			return nil, nil
		}
	}
	q, err := srv.reader()
	if err != nil {
		return nil, err
	}
	fs, err := verify.Server(ctx, q)
	for i := range fs {
		fs[i].Object = "server " + srv.name + ": " + fs[i].Object
	}
	return fs, err
}

// connectApp connects to db on srv as the serving role, outside any pool
// but within the budget.
func (s *Strategy) connectApp(ctx context.Context, srv *server, db string) (*pgx.Conn, error) {
	if srv.app == nil {
		return nil, isolation.ErrNoApp
	}
	cfg := srv.app.ConnConfig.Copy()
	cfg.Database = db
	cfg.DialFunc = s.budget.dialer(nil, cfg.DialFunc)
	return pgx.ConnectConfig(ctx, cfg)
}
