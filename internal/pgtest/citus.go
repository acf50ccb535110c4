package pgtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// On a Citus cluster every test database exists on every node: the
// coordinator's holds the metadata and the local tables, each worker's its
// shards and a copy of the metadata. Citus can propagate CREATE DATABASE
// (citus.enable_create_database_propagation, off by default) but only from
// template1, so it cannot clone a migrated template. pgtest therefore
// clones the template on each node itself, the workers' through
// run_command_on_workers: a clone of every node's template is a consistent
// cluster database, shards and metadata alike.
//
// Templates are built once per server: a base (the citus extension on
// every node, the nodes registered) and, cloned from it, the migrated one.
// Nothing may be connected to a template while it is cloned, but Citus's
// maintenance daemons (one per database and node) and the nodes' own
// connections would keep reaching it; a finished template therefore no
// longer allows connections, and whatever was connected is ended.

// citusBaseName is the base template's name; it depends on nothing that
// changes with the code.
const citusBaseName = "bulkhead_citus_base"

// detectCitus reports whether the admin database has the citus extension.
func detectCitus(ctx context.Context) (bool, error) {
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return false, fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(ctx)
	return isolation.IsCitus(ctx, conn)
}

var (
	baseMu   sync.Mutex
	baseDone bool
)

// citusBase returns the name of the base template, building it once per
// server under an advisory lock: on every node the citus extension, and on
// the coordinator the same nodes registered as in the admin database.
func citusBase(ctx context.Context) (string, error) {
	baseMu.Lock()
	defer baseMu.Unlock()
	if baseDone {
		return citusBaseName, nil
	}
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, citusBaseName); err != nil {
		return "", err
	}
	defer conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, citusBaseName)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, citusBaseName).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if err := buildCitusBase(ctx, conn); err != nil {
			return "", fmt.Errorf("build %s: %w", citusBaseName, err)
		}
	}
	baseDone = true
	return citusBaseName, nil
}

func buildCitusBase(ctx context.Context, conn *pgx.Conn) error {
	building := citusBaseName + "_build"
	if err := dropDatabase(ctx, conn, building); err != nil {
		return err
	}
	if err := cloneDatabase(ctx, conn, building, "template0"); err != nil {
		return err
	}
	type node struct {
		Host  string
		Port  int32
		Group int32
	}
	rows, err := conn.Query(ctx, `SELECT nodename, nodeport, groupid FROM pg_dist_node WHERE noderole = 'primary' ORDER BY groupid`)
	if err != nil {
		return err
	}
	nodes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[node])
	if err != nil {
		return err
	}
	var hosts []string
	var ports []int32
	var create []string
	stmts := []string{`CREATE EXTENSION citus`}
	for _, n := range nodes {
		if n.Group == 0 {
			stmts = append(stmts, fmt.Sprintf(`SELECT citus_set_coordinator_host(%s, %d)`, literal(n.Host), n.Port))
			continue
		}
		hosts, ports, create = append(hosts, n.Host), append(ports, n.Port), append(create, `CREATE EXTENSION citus`)
	}
	if len(hosts) == 0 {
		return errors.New("the admin database registers no worker")
	}
	// The workers need the extension before they can be registered; the
	// coordinator's new database knows no worker yet, so address them by
	// name (master_run_on_worker runs in the database of the same name).
	stmts = append(stmts, `SELECT bool_and(success) AND count(*) = $1, string_agg(result, '; ') FROM master_run_on_worker($2, $3, $4, true)`)
	for i := range hosts {
		stmts = append(stmts, fmt.Sprintf(`SELECT citus_add_node(%s, %d)`, literal(hosts[i]), ports[i]))
	}
	b, err := pgx.Connect(ctx, dsn(building, "", ""))
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	for _, s := range stmts {
		if strings.Contains(s, "master_run_on_worker") {
			var ok bool
			var result string
			if err := b.QueryRow(ctx, s, len(hosts), hosts, ports, create).Scan(&ok, &result); err != nil {
				return fmt.Errorf("create the extension on the workers: %w", err)
			}
			if !ok {
				return fmt.Errorf("create the extension on the workers: %s", result)
			}
			continue
		}
		if _, err := b.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	b.Close(ctx)
	return finishCitusTemplate(ctx, conn, building, citusBaseName)
}

// finishCitusTemplate renames building to name on every node and makes it
// a template nothing connects to any more.
func finishCitusTemplate(ctx context.Context, conn *pgx.Conn, building, name string) error {
	from, to := pgx.Identifier{building}.Sanitize(), pgx.Identifier{name}.Sanitize()
	steps := []string{
		// First, so that nothing comes back once ended: neither a
		// maintenance daemon nor another node's connection.
		`ALTER DATABASE ` + from + ` WITH ALLOW_CONNECTIONS false`,
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ` + literal(building) + ` AND pid <> pg_backend_pid()`,
		`ALTER DATABASE ` + from + ` RENAME TO ` + to,
		`ALTER DATABASE ` + to + ` WITH IS_TEMPLATE true`,
	}
	for _, s := range steps {
		local := func() error { _, err := conn.Exec(ctx, s); return err }
		workers := func() error { return isolation.OnWorkers(ctx, conn, s) }
		for _, run := range []func() error{local, workers} {
			if err := retryInUse(ctx, run); err != nil {
				return err
			}
		}
	}
	return nil
}

// retryInUse runs run until it does not fail on a database in use, five
// times at most: a backend ended a moment ago may still be leaving (a
// rename waits five seconds for it before it fails).
func retryInUse(ctx context.Context, run func() error) error {
	var err error
	for range 5 {
		if err = run(); err == nil || !beingAccessed(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
	return err
}

// beingAccessed reports whether err is a database refused as in use.
func beingAccessed(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" {
		return true
	}
	return strings.Contains(err.Error(), "is being accessed by other users")
}

// literal quotes s as an SQL string literal.
func literal(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
