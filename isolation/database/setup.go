package database

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Setup prepares every server: Bulkhead's roles where they are missing,
// what the owner needs to drop a tenant database its sessions still use,
// and the template database of the current tenant migrations. A server
// that cannot be reached is skipped (and logged) while another is set up:
// its tenants fail their migration instead, and the next run sets it up.
func (s *Strategy) Setup(ctx context.Context) error {
	var down []error
	for _, srv := range s.order {
		err := s.setupServer(ctx, srv)
		switch {
		case err == nil:
		case unreachable(err) && ctx.Err() == nil:
			s.log.Warn("tenant database server unreachable; not set up", "server", srv.name, "err", err)
			down = append(down, fmt.Errorf("set up server %s: %w", srv.name, err))
		default:
			return fmt.Errorf("set up server %s: %w", srv.name, err)
		}
	}
	if len(down) == len(s.order) {
		return errors.Join(down...)
	}
	return nil
}

func (s *Strategy) setupServer(ctx context.Context, srv *server) error {
	if srv.owner == nil {
		return isolation.ErrNoOwner
	}
	// The migrate DSN's own identity: roles and grants may need more than
	// the owner role has.
	conn, err := pgx.ConnectConfig(ctx, srv.owner)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := s.ensureRoles(ctx, conn); err != nil {
		return err
	}
	if err := s.readPreload(ctx, conn, srv); err != nil {
		return err
	}
	lock := isolation.LockID(conn.Config().Database, TemplateName())
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lock); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, lock)
	if err := isolation.BecomeOwner(ctx, conn); err != nil {
		return err
	}
	if err := s.ensureTemplate(ctx, conn, srv); err != nil {
		return err
	}
	s.dropStaleTemplates(ctx, conn, srv)
	return nil
}

// readPreload says, once per process and server, when srv does not
// preload plpgsql: every new tenant connection then loads it for the move
// fence. Setup runs again at every tenant creation of a strategy that is
// not the default and at every move, which need not read it again.
func (s *Strategy) readPreload(ctx context.Context, conn *pgx.Conn, srv *server) error {
	if !srv.preloadRead.CompareAndSwap(false, true) {
		return nil
	}
	var preload string
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.current_setting('shared_preload_libraries')`).Scan(&preload); err != nil {
		srv.preloadRead.Store(false) // read it at the next Setup
		return fmt.Errorf("read shared_preload_libraries: %w", err)
	}
	if !preloads(preload, "plpgsql") {
		s.log.Info("tenant database server does not preload plpgsql: every new tenant connection loads it for the move fence, "+
			"some 0.5 ms of server time per cold start; add it to shared_preload_libraries", "server", srv.name)
	}
	return nil
}

// preloads reports whether the shared_preload_libraries setting names
// library (as a name, a path, or either with a .so suffix).
func preloads(setting, library string) bool {
	for _, lib := range strings.Split(setting, ",") {
		lib = strings.Trim(strings.TrimSpace(lib), `"`)
		lib = strings.TrimSuffix(path.Base(lib), ".so")
		if lib == library {
			return true
		}
	}
	return false
}

// ensureRoles creates the roles where they are missing, lets the owner end
// the serving role's sessions (DROP DATABASE … WITH (FORCE) of a tenant
// database still in use), and lets the serving role connect to the
// server's control database (readiness). It changes nothing that is
// already so.
func (s *Strategy) ensureRoles(ctx context.Context, conn *pgx.Conn) error {
	names := []string{isolation.OwnerRole, isolation.AppRole}
	if s.cfg.System {
		names = append(names, isolation.SystemRole)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)`, names).Scan(&have); err != nil {
		return fmt.Errorf("look up roles: %w", err)
	}
	ready := have == len(names)
	if ready {
		if err := conn.QueryRow(ctx,
			`SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles WHERE rolname = current_user`,
			isolation.OwnerRole).Scan(&ready); err != nil {
			return fmt.Errorf("check owner membership: %w", err)
		}
	}
	if !ready {
		if err := isolation.EnsureRoles(ctx, conn, s.cfg.System); err != nil {
			return err
		}
	}
	// Membership in the serving role, not pg_signal_backend: the owner may
	// then end the serving role's sessions, and no one else's.
	if err := grantOnce(ctx, conn,
		`SELECT pg_has_role($1, $2, 'USAGE')`, []any{isolation.OwnerRole, isolation.AppRole},
		`GRANT `+pgx.Identifier{isolation.AppRole}.Sanitize()+` TO `+pgx.Identifier{isolation.OwnerRole}.Sanitize()); err != nil {
		return fmt.Errorf("let %s end %s's sessions of a dropped tenant database: %w", isolation.OwnerRole, isolation.AppRole, err)
	}
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return err
	}
	if err := grantOnce(ctx, conn,
		`SELECT has_database_privilege($1, current_database(), 'CONNECT')`, []any{isolation.AppRole},
		`GRANT CONNECT ON DATABASE `+pgx.Identifier{db}.Sanitize()+` TO `+pgx.Identifier{isolation.AppRole}.Sanitize()); err != nil {
		return fmt.Errorf("let %s connect to %s: %w", isolation.AppRole, db, err)
	}
	return nil
}

// grantOnce runs grant unless check says it is granted already. A grant
// that fails because a concurrent migrator granted it meanwhile is not an
// error.
func grantOnce(ctx context.Context, conn *pgx.Conn, check string, args []any, grant string) error {
	granted := func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, check, args...).Scan(&ok)
		return ok, err
	}
	if ok, err := granted(); err != nil || ok {
		return err
	}
	if _, err := conn.Exec(ctx, grant); err != nil {
		if ok, cerr := granted(); cerr == nil && ok {
			return nil
		}
		return fmt.Errorf("%s: %w", grant, err)
	}
	return nil
}

// ensureTemplate makes sure the template of the current migrations exists
// on the server, marked IS_TEMPLATE and refusing connections, so that
// nothing is connected to it while it is cloned. conn acts as the owner.
//
// It is built under another name and renamed once complete: the advisory
// lock serialises the migrators of one deployment, the rename those of
// deployments sharing a server, and no one ever clones half a template.
func (s *Strategy) ensureTemplate(ctx context.Context, conn *pgx.Conn, srv *server) error {
	tpl := TemplateName()
	var isTemplate, allowConn bool
	err := conn.QueryRow(ctx, `SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1`, tpl).Scan(&isTemplate, &allowConn)
	switch {
	case err == nil && isTemplate && !allowConn:
		return nil
	case err == nil:
		_, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{tpl}.Sanitize()+` WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`)
		return err
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("look up template %s: %w", tpl, err)
	}

	build := tpl + "_b" + randomHex(4)
	ident := pgx.Identifier{build}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident+` TEMPLATE template0 OWNER `+pgx.Identifier{isolation.OwnerRole}.Sanitize()); err != nil {
		return fmt.Errorf("create template %s: %w", tpl, err)
	}
	built := false
	defer func() {
		if !built {
			s.dropTemplate(context.WithoutCancel(ctx), conn, srv, build)
		}
	}()
	if _, err := conn.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+ident+` FROM PUBLIC`); err != nil {
		return fmt.Errorf("build template %s: %w", tpl, err)
	}
	cfg, err := srv.ownerConfig(build)
	if err != nil {
		return err
	}
	if _, err := isolation.MigrateTenantTables(ctx, cfg, schema); err != nil {
		return fmt.Errorf("build template %s: %w", tpl, err)
	}
	if err := grantTemplate(ctx, srv, build); err != nil {
		return fmt.Errorf("build template %s: %w", tpl, err)
	}
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+ident+` WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`); err != nil {
		return fmt.Errorf("build template %s: %w", tpl, err)
	}
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+ident+` RENAME TO `+pgx.Identifier{tpl}.Sanitize()); err != nil {
		var code interface{ SQLState() string }
		// duplicate_database, or the unique index when the rename races
		// another: another migrator's template is complete.
		if errors.As(err, &code) && (code.SQLState() == "42P04" || code.SQLState() == "23505") {
			return nil
		}
		return fmt.Errorf("build template %s: %w", tpl, err)
	}
	built = true
	s.log.Info("tenant template database built", "server", srv.name, "template", tpl)
	return nil
}

// grantTemplate gives the serving role what it needs inside the template,
// the move fence's function included, and PUBLIC nothing: every tenant
// database inherits it.
func grantTemplate(ctx context.Context, srv *server, db string) error {
	conn, err := srv.connectOwner(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	app := pgx.Identifier{isolation.AppRole}.Sanitize()
	if _, err := conn.Exec(ctx, `REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO `+app); err != nil {
		return err
	}
	return isolation.GrantTenantTables(ctx, conn, schema, isolation.AppRole, isolation.FenceDatabaseDDL(isolation.AppRole))
}

// dropStaleTemplates drops the templates of earlier tenant migrations.
// A clone in progress holds its template until done; a failure is logged:
// a stale template costs only disk.
func (s *Strategy) dropStaleTemplates(ctx context.Context, conn *pgx.Conn, srv *server) {
	rows, err := conn.Query(ctx, `
		SELECT datname FROM pg_database
		WHERE datname LIKE 'bulkhead\_tpl\_%' AND datname <> $1 AND datname !~ '_b[0-9a-f]{8}$'
		  AND datdba = (SELECT oid FROM pg_roles WHERE rolname = $2)`, TemplateName(), isolation.OwnerRole)
	if err != nil {
		s.log.Warn("list stale tenant templates", "server", srv.name, "err", err)
		return
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.log.Warn("list stale tenant templates", "server", srv.name, "err", err)
		return
	}
	for _, name := range stale {
		s.dropTemplate(ctx, conn, srv, name)
	}
}

func (s *Strategy) dropTemplate(ctx context.Context, conn *pgx.Conn, srv *server, name string) {
	ident := pgx.Identifier{name}.Sanitize()
	for _, stmt := range []string{
		`ALTER DATABASE ` + ident + ` WITH IS_TEMPLATE false`,
		`DROP DATABASE ` + ident,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			s.log.Warn("drop tenant template", "server", srv.name, "template", name, "err", err)
			return
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
