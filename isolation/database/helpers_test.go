package database_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is a server whose new tenants get databases of their own, and the
// superuser DSN of each of its servers, by name.
type env struct {
	*apitest.Env
	admin map[string]string
}

// start serves with the database strategy. servers are extra servers
// (name: superuser DSN of a postgres database there, whose bulkhead
// database startCluster created); with none, tenants live on the test's
// server, named database.DefaultServer. Every tenant database the control
// plane records is dropped when t ends, unless t failed.
func start(t testing.TB, servers map[string]string, opts ...apitest.Option) *env {
	t.Helper()
	db := pgtest.New(t)
	e := &env{admin: map[string]string{}}
	if len(servers) == 0 {
		e.admin[database.DefaultServer] = db.AdminURL
	} else {
		e.admin["main"] = db.AdminURL
		list := []string{fmt.Sprintf(`{"name":"main","url":%q,"migrate_url":%q}`, db.AppURL, db.MigrateURL)}
		for name, dsn := range servers {
			e.admin[name] = withDatabase(t, dsn, "bulkhead")
			list = append(list, fmt.Sprintf(`{"name":%q,"url":%q,"migrate_url":%q}`,
				name, withUser(t, e.admin[name], isolation.AppRole), e.admin[name]))
		}
		opts = append([]apitest.Option{apitest.WithEnv("BULKHEAD_ISOLATION__DATABASE__SERVERS", "["+strings.Join(list, ",")+"]")}, opts...)
	}
	opts = append([]apitest.Option{apitest.WithStrategy(isolation.Database), dropTenantDatabases(e.admin)}, opts...)
	e.Env = apitest.Start(t, db, opts...)
	return e
}

// dropTenantDatabases drops, when the test ends and unless it failed, the
// database of every tenant the server's control plane records, on the
// servers admin names (by server name: a superuser DSN there) that are up.
// Tenant databases are global to their cluster: the test's own database
// does not take them along.
func dropTenantDatabases(admin map[string]string) apitest.Option {
	return apitest.WithStarted(func(t testing.TB, e *apitest.Env) {
		// Registered after the server's own cleanup, so run before it:
		// the server still runs, and FORCE ends its sessions.
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("kept the tenant databases of %s for inspection", e.DB.Name)
				return
			}
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, e.DB.AdminURL)
			if err != nil {
				t.Logf("drop tenant databases: %v", err)
				return
			}
			defer conn.Close(ctx)
			rows, _ := conn.Query(ctx, `SELECT id, server FROM bulkhead.tenants WHERE isolation = 'database'`)
			type placed struct {
				id     uuid.UUID
				server string
			}
			all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (placed, error) {
				var p placed
				return p, r.Scan(&p.id, &p.server)
			})
			if err != nil {
				t.Logf("drop tenant databases: %v", err)
				return
			}
			begin := time.Now()
			var g errgroup.Group
			g.SetLimit(4)
			for _, p := range all {
				dsn := admin[p.server]
				if dsn == "" {
					dsn = e.DB.AdminURL
				}
				g.Go(func() error {
					conn, err := pgx.Connect(ctx, dsn)
					if err != nil {
						return nil // that server is down: its cluster goes with the test
					}
					defer conn.Close(ctx)
					if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+database.DBName(p.id)+` WITH (FORCE)`); err != nil {
						t.Logf("drop tenant database of %s: %v", p.id, err)
					}
					return nil
				})
			}
			_ = g.Wait()
			if len(all) > 20 {
				t.Logf("dropped %d tenant databases in %s", len(all), time.Since(begin).Round(time.Millisecond))
			}
		})
	})
}

// strategy returns the server's database strategy.
func (e *env) strategy(t testing.TB) *database.Strategy {
	t.Helper()
	s, err := e.Router.Strategy(isolation.Database)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*database.Strategy)
}

// adminConn connects as a superuser to db on server, closed when t ends.
func (e *env) adminConn(t testing.TB, server, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), withDatabase(t, e.admin[server], db))
	if err != nil {
		t.Fatalf("connect to %s on %s: %v", db, server, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// startCluster starts a second throwaway PostgreSQL with a bulkhead
// database and no Bulkhead role, stopped when t ends.
func startCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(t.TempDir(), "pg"), Settings: map[string]string{"max_connections": "100"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	conn, err := pgx.Connect(ctx, c.URL("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE bulkhead`); err != nil {
		t.Fatal(err)
	}
	return c
}

func withDatabase(t testing.TB, dsn, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	return u.String()
}

func withUser(t testing.TB, dsn, user string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func isUnavailable(err error) bool { return errors.Is(err, isolation.ErrUnavailable) }
