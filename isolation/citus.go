package isolation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Citus modes, as configured in database.citus: whether the database is a
// Citus coordinator whose tenant tables are to be distributed over its
// workers.
const (
	// CitusAuto treats the database as Citus when the citus extension is
	// installed in it.
	CitusAuto = "auto"
	// CitusOn requires the extension: its absence is an error.
	CitusOn = "on"
	// CitusOff treats the database as plain PostgreSQL even when the
	// extension is there: tenant tables stay on the coordinator.
	CitusOff = "off"
)

// DistributionColumn is the column every tenant table is distributed on,
// so that one tenant's rows of every table sit together in one shard
// group, and the composite foreign keys stay within it.
const DistributionColumn = "tenant_id"

// PropagateSetting is the Citus setting that makes a transaction's SET
// LOCAL statements, the tenant binding among them, reach the workers; it
// must hold for the whole database (see PrepareCitus).
const PropagateSetting = "citus.propagate_set_commands"

// CitusError is something a Citus cluster lacks that Bulkhead cannot fix
// with the privileges it has. Its message is one line that says what to
// run.
type CitusError struct{ Msg string }

func (e *CitusError) Error() string { return e.Msg }

// IsCitus reports whether the current database of q has the citus
// extension installed.
func IsCitus(ctx context.Context, q Querier) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT `+CitusQuery).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for the citus extension: %w", err)
	}
	return ok, nil
}

// UseCitus reports whether the current database of q is to be used as a
// Citus coordinator under mode (CitusAuto, CitusOn or CitusOff; empty
// means CitusAuto). With CitusOn, a database without the extension is a
// *CitusError.
func UseCitus(ctx context.Context, q Querier, mode string) (bool, error) {
	if mode == CitusOff {
		return false, nil
	}
	ok, err := IsCitus(ctx, q)
	if err != nil {
		return false, err
	}
	return CitusFor(mode, ok)
}

// CitusQuery is the expression IsCitus reads, for a caller that folds it
// into a query of its own (and passes its answer to CitusFor).
const CitusQuery = `EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`

// CitusFor is UseCitus for a database that has the citus extension or not
// (installed, as CitusQuery reads it).
func CitusFor(mode string, installed bool) (bool, error) {
	if mode == CitusOff {
		return false, nil
	}
	if !installed && mode == CitusOn {
		return false, &CitusError{"database.citus is on, but the database has no citus extension: CREATE EXTENSION citus on the coordinator and every worker, then register the workers with citus_add_node"}
	}
	return installed, nil
}

// PrepareCitus readies the current database of q, a Citus coordinator, for
// Bulkhead, fixing what the connection's role may and returning a
// *CitusError naming what it may not:
//
//   - it must be the coordinator, with at least one active worker;
//   - the owner role, and the system role where it exists, must be LOGIN,
//     since Citus opens the connections to the workers that carry their
//     work as the current role (the workers' authentication must admit
//     only the coordinator: see docs/DESIGN.md);
//   - the workers' databases need the grants GrantDatabase gives on the
//     coordinator's (Citus does not carry database-level grants over):
//     the owner's DDL (a schema, the shards) runs there as the owner;
//   - PropagateSetting must be 'local' for the database, so that the
//     tenant binding reaches the workers for every role, the owner's
//     role-switched sessions included. Sessions opened before it was set
//     do not see it.
//
// q connects with database.migrate_url's own identity, not as the owner.
// It is idempotent.
func PrepareCitus(ctx context.Context, q Querier) error {
	var coordinator bool
	var workers int
	if err := q.QueryRow(ctx, `
		SELECT citus_is_coordinator(),
		       (SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive AND noderole = 'primary')`,
	).Scan(&coordinator, &workers); err != nil {
		return fmt.Errorf("read the Citus nodes: %w", err)
	}
	if !coordinator {
		return &CitusError{"database.migrate_url does not lead to the Citus coordinator: point database.url and database.migrate_url at the coordinator"}
	}
	if workers == 0 {
		return &CitusError{"the Citus coordinator has no active worker: register each with SELECT citus_add_node('HOST', PORT)"}
	}

	rows, err := q.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname = ANY($1) AND NOT rolcanlogin ORDER BY 1`,
		[]string{OwnerRole, SystemRole})
	if err != nil {
		return fmt.Errorf("read roles: %w", err)
	}
	nologin, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read roles: %w", err)
	}
	for _, role := range nologin {
		ident := pgx.Identifier{role}.Sanitize()
		if _, err := q.Exec(ctx, `ALTER ROLE `+ident+` LOGIN`); err != nil {
			if insufficientPrivilege(err) {
				return &CitusError{fmt.Sprintf("role %s must be LOGIN on a Citus cluster (Citus runs its work on the workers as that role): ALTER ROLE %s LOGIN", role, ident)}
			}
			return fmt.Errorf("let %s log in: %w", role, err)
		}
	}

	var db string
	if err := q.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	for _, stmt := range databaseGrants(db) {
		// A worker that has the metadata would otherwise try to pass
		// the grant on to the other nodes, which only the coordinator
		// may; run_command_on_workers's connection ends after it.
		if err := OnWorkers(ctx, q, "SET citus.enable_ddl_propagation TO off; "+stmt); err != nil {
			return err
		}
	}

	var settings []string
	if err := q.QueryRow(ctx, `
		SELECT COALESCE((
			SELECT s.setconfig FROM pg_db_role_setting s
			WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0
		), '{}')`).Scan(&settings); err != nil {
		return fmt.Errorf("read the database's settings: %w", err)
	}
	if !slices.Contains(settings, PropagateSetting+"=local") {
		stmt := `ALTER DATABASE ` + pgx.Identifier{db}.Sanitize() + ` SET ` + PropagateSetting + ` = 'local'`
		if _, err := q.Exec(ctx, stmt); err != nil {
			if insufficientPrivilege(err) {
				return &CitusError{fmt.Sprintf("the tenant binding reaches the Citus workers only with %s = 'local' for the whole database: %s (as the database's owner)", PropagateSetting, stmt)}
			}
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

// DistributeTenantTables distributes every tenant table of schema (on the
// coordinator q connects to, as the tables' owner) that is not distributed
// yet: on DistributionColumn, in one co-location group with the tenant
// tables already distributed, referenced tables before the tables that
// reference them. It is idempotent; run it after every migration run, so
// that a table a later migration adds is distributed too. A tenant table
// that Citus already manages in another way (another distribution column,
// another co-location group, a reference table) is a *CitusError: it
// cannot be fixed without moving its rows, which is the operator's call.
//
// Citus refuses a foreign key from a local table to a distributed one, so a
// migration that adds a tenant table must add its foreign keys to existing
// tenant tables in a later migration than the one creating it.
func DistributeTenantTables(ctx context.Context, q Querier, schema string) error {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       p.partmethod IS NOT NULL,
		       COALESCE(p.partmethod::text, ''),
		       COALESCE(CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END, ''),
		       COALESCE(p.colocationid, 0),
		       ARRAY(SELECT DISTINCT r.relname FROM pg_constraint f JOIN pg_class r ON r.oid = f.confrelid
		             WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid
		               AND r.relnamespace = c.relnamespace ORDER BY 1)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND EXISTS (SELECT FROM pg_attribute a
		              WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped)
		ORDER BY 1`, schema, DistributionColumn)
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	type table struct {
		name        string
		distributed bool
		method      string
		column      string
		colocation  int64
		references  []string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		err := r.Scan(&t.name, &t.distributed, &t.method, &t.column, &t.colocation, &t.references)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}

	anchor, group := "", int64(0)
	var todo []table
	for _, t := range tables {
		qualified := pgx.Identifier{schema, t.name}.Sanitize()
		switch {
		case !t.distributed:
			todo = append(todo, t)
		case t.method != "h" || t.column != DistributionColumn:
			return &CitusError{fmt.Sprintf("tenant table %s is managed by Citus but not hash-distributed on %s: SELECT undistribute_table('%s'), then run bulkhead migrate again", qualified, DistributionColumn, qualified)}
		case group == 0:
			anchor, group = t.name, t.colocation
		case t.colocation != group:
			return &CitusError{fmt.Sprintf("tenant table %s is not co-located with %s: SELECT update_distributed_table_colocation('%s', colocate_with => '%s')",
				qualified, pgx.Identifier{schema, anchor}.Sanitize(), qualified, pgx.Identifier{schema, anchor}.Sanitize())}
		}
	}

	// Referenced tables first: Citus accepts a foreign key between two
	// co-located distributed tables, never from a distributed table to a
	// local one.
	done := map[string]bool{}
	for _, t := range tables {
		done[t.name] = t.distributed
	}
	cycle, err := inReferenceOrder(todo, func(t table) (string, []string) { return t.name, t.references }, done, false, func(t table) error {
		colocate := "none" // the first one founds the group
		if anchor != "" {
			colocate = pgx.Identifier{schema, anchor}.Sanitize()
		}
		qualified := pgx.Identifier{schema, t.name}.Sanitize()
		if _, err := q.Exec(ctx, `SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)`,
			qualified, DistributionColumn, colocate); err != nil {
			return fmt.Errorf("distribute %s on %s: %w", qualified, DistributionColumn, err)
		}
		if anchor == "" {
			anchor = t.name
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cycle != nil {
		return fmt.Errorf("distribute the tenant tables of %s: foreign keys form a cycle among %s", schema, strings.Join(cycle, ", "))
	}
	return nil
}

// inReferenceOrder calls distribute for each table of todo (key gives its
// name and the tables it references), a table only once every table it
// references is done: true in done, or, when unknownWaits is false, not in
// done at all. Each table distributed is marked done. When foreign keys
// form a cycle among the tables left, it stops and returns their names.
func inReferenceOrder[T any](todo []T, key func(T) (string, []string), done map[string]bool, unknownWaits bool, distribute func(T) error) ([]string, error) {
	for len(todo) > 0 {
		progressed := false
		rest := todo[:0:0]
		for _, t := range todo {
			name, references := key(t)
			ready := true
			for _, ref := range references {
				if known, ok := done[ref]; !known && (ok || unknownWaits) {
					ready = false
				}
			}
			if !ready {
				rest = append(rest, t)
				continue
			}
			if err := distribute(t); err != nil {
				return nil, err
			}
			done[name] = true
			progressed = true
		}
		if !progressed {
			names := make([]string, len(rest))
			for i, t := range rest {
				names[i], _ = key(t)
			}
			return names, nil
		}
		todo = rest
	}
	return nil, nil
}

// DistributeSchema makes schema a distributed schema of Citus's
// schema-based sharding, when it is not one already: its tables move, as
// one shard group, to one worker. Tables created in it later are
// distributed with it by Citus itself — but only by a top-level CREATE
// TABLE: one a migration creates inside a DO block or a function stays a
// local table on the coordinator. So every table of the schema that is not
// in its shard group yet is added to it (a single-shard table co-located
// with the schema's others), referenced tables first. q acts as the
// schema's owner. It is idempotent; run it after every migration run.
func DistributeSchema(ctx context.Context, q Querier, schema string) error {
	var distributed bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_dist_schema WHERE schemaid = to_regnamespace($1))`,
		pgx.Identifier{schema}.Sanitize()).Scan(&distributed); err != nil {
		return fmt.Errorf("look up distributed schema %s: %w", schema, err)
	}
	if !distributed {
		if _, err := q.Exec(ctx, `SELECT citus_schema_distribute($1::regnamespace)`, pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("distribute schema %s: %w", schema, err)
		}
		return nil
	}
	rows, err := q.Query(ctx, `
		SELECT c.relname, p.logicalrelid IS NOT NULL, c.relforcerowsecurity,
		       ARRAY(SELECT DISTINCT r.relname FROM pg_constraint f JOIN pg_class r ON r.oid = f.confrelid
		             WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid
		               AND r.relnamespace = c.relnamespace ORDER BY 1)
		FROM pg_class c
		LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
		WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		ORDER BY 2 DESC, 1`, pgx.Identifier{schema}.Sanitize())
	if err != nil {
		return fmt.Errorf("list the tables of %s: %w", schema, err)
	}
	type table struct {
		name        string
		distributed bool
		forced      bool
		references  []string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		err := r.Scan(&t.name, &t.distributed, &t.forced, &t.references)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("list the tables of %s: %w", schema, err)
	}
	anchor := ""
	done := map[string]bool{}
	var todo []table
	for _, t := range tables {
		done[t.name] = t.distributed
		switch {
		case !t.distributed:
			todo = append(todo, t)
		case anchor == "":
			anchor = t.name
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if anchor == "" {
		return &CitusError{fmt.Sprintf("distributed schema %s holds only local tables, which Citus cannot add to its shard group: SELECT citus_schema_undistribute('%s'); SELECT citus_schema_distribute('%s'), then run bulkhead migrate again",
			schema, pgx.Identifier{schema}.Sanitize(), pgx.Identifier{schema}.Sanitize())}
	}
	colocate := pgx.Identifier{schema, anchor}.Sanitize()
	b, ok := q.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return fmt.Errorf("distribute the tables of %s: %T cannot begin a transaction", schema, q)
	}
	cycle, err := inReferenceOrder(todo, func(t table) (string, []string) { return t.name, t.references }, done, true, func(t table) error {
		qualified := pgx.Identifier{schema, t.name}.Sanitize()
		// Citus copies the table's rows into its shard with COPY,
		// which forced Row-Level Security refuses even to the
		// owner: unforced for the copy, in the same transaction,
		// so no other session ever sees it unforced.
		err := pgx.BeginFunc(ctx, b, func(tx pgx.Tx) error {
			stmts := []string{`SET LOCAL citus.multi_shard_modify_mode TO 'sequential'`}
			if t.forced {
				stmts = append(stmts, `ALTER TABLE `+qualified+` NO FORCE ROW LEVEL SECURITY`)
			}
			for _, stmt := range stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `SELECT create_distributed_table($1::regclass, NULL, colocate_with => $2)`, qualified, colocate); err != nil {
				return err
			}
			if t.forced {
				_, err := tx.Exec(ctx, `ALTER TABLE `+qualified+` FORCE ROW LEVEL SECURITY`)
				return err
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("add %s to the shard group of schema %s: %w", qualified, schema, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cycle != nil {
		return fmt.Errorf("distribute the tables of %s: foreign keys form a cycle among %s", schema, strings.Join(cycle, ", "))
	}
	return nil
}

// OnWorkers runs stmt on every active worker of the Citus coordinator q
// connects to, in the database of the same name, as the current role,
// outside a transaction block (run_command_on_workers), and returns an
// error naming each worker where it failed. A statement the workers refuse
// for lack of privilege is a *CitusError.
func OnWorkers(ctx context.Context, q Querier, stmt string) error {
	rows, err := q.Query(ctx, `SELECT nodename, nodeport, success, result FROM run_command_on_workers($1)`, stmt)
	if err != nil {
		return fmt.Errorf("on the Citus workers: %s: %w", stmt, err)
	}
	type result struct {
		Node    string
		Port    int
		Success bool
		Result  string
	}
	results, err := pgx.CollectRows(rows, pgx.RowToStructByPos[result])
	if err != nil {
		return fmt.Errorf("on the Citus workers: %s: %w", stmt, err)
	}
	var failed []string
	denied := false
	for _, r := range results {
		if !r.Success {
			failed = append(failed, fmt.Sprintf("%s:%d: %s", r.Node, r.Port, r.Result))
			// run_command_on_workers returns a worker's error as text
			// only, without its SQLSTATE: the one place the message is
			// read, and it only chooses the wording of an error that
			// fails either way (translated, it is the plain one).
			denied = denied || strings.Contains(r.Result, "permission denied") || strings.Contains(r.Result, "must be owner")
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case denied:
		return &CitusError{fmt.Sprintf("run on every Citus worker, as a role that may: %s (%s)", stmt, strings.Join(failed, "; "))}
	}
	return fmt.Errorf("on the Citus workers: %s: %s", stmt, strings.Join(failed, "; "))
}

func insufficientPrivilege(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// Options are what the rls and schema strategies take besides their pools.
type Options struct {
	// Citus is database.citus: CitusAuto (the default when empty),
	// CitusOn or CitusOff.
	Citus string
	// MigrateParallelism is isolation.migrate_parallelism: how many
	// tenants migrate at once, and so how many owner migration sessions
	// the schema strategy keeps for the next tenants (4 when not set).
	MigrateParallelism int
}

// Option sets one of Options.
type Option func(*Options)

// WithCitus sets Options.Citus.
func WithCitus(mode string) Option { return func(o *Options) { o.Citus = mode } }

// WithMigrateParallelism sets Options.MigrateParallelism; n < 1 keeps
// the default.
func WithMigrateParallelism(n int) Option {
	return func(o *Options) {
		if n >= 1 {
			o.MigrateParallelism = n
		}
	}
}

// NewOptions applies opts to the defaults.
func NewOptions(opts ...Option) Options {
	o := Options{Citus: CitusAuto, MigrateParallelism: 4}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
