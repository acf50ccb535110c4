package harness

// The migration anchor: the tenant migrations' DDL applied as plain SQL
// scripts through psql, with the parallelism of `bulkhead migrate`, into
// fresh schemas or databases of the same server — what migrating the
// tenants costs the server with no migration tool in between.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// TenantScript is the Up part of every tenant migration, in version order,
// as one plain SQL script for psql: each migration that goose runs in a
// transaction wrapped in BEGIN and COMMIT, the statements of a
// NO TRANSACTION one left in autocommit. It is read from the embedded
// migration files, so it cannot drift from what the strategies apply;
// goose's annotations stay, as the SQL comments they are.
func TenantScript() (string, error) {
	fsys := migrations.Tenant.FS()
	var names []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path.Ext(p) == ".sql" {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return "", err
		}
		up, tx, err := upSection(string(src))
		if err != nil {
			return "", fmt.Errorf("migration %s: %w", name, err)
		}
		fmt.Fprintf(&b, "-- %s\n", name)
		if tx {
			b.WriteString("BEGIN;\n")
		}
		b.WriteString(strings.TrimSpace(up))
		b.WriteString("\n")
		if tx {
			b.WriteString("COMMIT;\n")
		}
	}
	return b.String(), nil
}

// upSection returns the lines of a goose SQL migration between its
// "-- +goose Up" and "-- +goose Down" annotations, and whether goose runs
// them in a transaction (no "-- +goose NO TRANSACTION" annotation).
func upSection(src string) (up string, tx bool, err error) {
	tx = true
	var b strings.Builder
	in, seen := false, false
	for line := range strings.Lines(src) {
		switch annotation(line) {
		case "up":
			in, seen = true, true
			continue
		case "down":
			in = false
			continue
		case "no transaction":
			tx = false
			continue
		}
		if in {
			b.WriteString(line)
		}
	}
	if !seen {
		return "", false, fmt.Errorf("no -- +goose Up annotation")
	}
	return b.String(), tx, nil
}

// annotation returns the lower-cased goose annotation on line ("up",
// "down", "no transaction", "statementbegin"...), or "".
func annotation(line string) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--")
	if !ok {
		return ""
	}
	rest, ok = strings.CutPrefix(strings.TrimSpace(rest), "+goose ")
	if !ok {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(rest))
}

// psql finds the psql of the cluster's PostgreSQL.
func psql() (string, error) {
	dir, err := pgcluster.FindBin()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "psql")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("psql is not beside the server binaries (%s): %w", dir, err)
	}
	return bin, nil
}

// migrateScript times the migration anchor of d (schema or database): as
// many fresh schemas (in d's database) or databases as d has tenants,
// made beforehand and untimed, owned by the owner role (databases: only
// before the first pass, emptied after the others); then the tenant
// script applied to each as the owner role, by MigrateParallelism psql
// processes each taking an equal share of them, timed from the first
// process's start to the last one's exit. It records
// <strategy>.migrate_script_<when>_s. Untimed after it: fresh schemas are
// kept, each pass making its own, until the last pass ("goose") drops
// them all and vacuums their database — dropping them in between would
// leave their files to be unlinked in a later timed phase (settle.go);
// fresh databases get an empty public schema after the passes before and
// after migrate (the filled one renamed, kept), and are dropped after the
// last.
func (h *harness) migrateScript(ctx context.Context, d *deployment, when string) error {
	script, err := TenantScript()
	if err != nil {
		return err
	}
	bin, err := psql()
	if err != nil {
		return err
	}
	n := len(d.tenants)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ddl_anchor_%s_%04d", when, i)
	}
	owner := pgx.Identifier{isolation.OwnerRole}.Sanitize()
	// Each psql script: a share of the targets, each target its
	// connection (database) or search_path (schema), then the DDL.
	var header func(name string) string
	var preamble, connectTo string
	var create, drop func(ctx context.Context, name string) error
	switch d.name {
	case Schema:
		connectTo, preamble = d.db, "SET ROLE "+owner+";\n"
		header = func(name string) string {
			return "SET search_path = " + pgx.Identifier{name}.Sanitize() + ";\n"
		}
		create = func(ctx context.Context, name string) error {
			return h.exec(ctx, d.db, `CREATE SCHEMA `+pgx.Identifier{name}.Sanitize()+` AUTHORIZATION `+owner)
		}
		drop = func(ctx context.Context, name string) error {
			if when != "goose" {
				return nil // kept, dropped with the last pass's below
			}
			for _, w := range anchorPasses {
				n := strings.Replace(name, "_goose_", "_"+w+"_", 1)
				if err := h.exec(ctx, d.db, `DROP SCHEMA IF EXISTS `+pgx.Identifier{n}.Sanitize()+` CASCADE`); err != nil {
					return err
				}
			}
			return nil
		}
	case Database:
		for i := range names {
			// One set of databases for every pass.
			names[i] = fmt.Sprintf("bench_ddl_anchor_%04d", i)
		}
		connectTo = "postgres"
		header = func(name string) string {
			// \connect keeps the user, host and port of the connection;
			// the role is set again on the new one.
			return `\connect ` + name + "\nSET ROLE " + owner + ";\nSET search_path = public;\n"
		}
		// Making and dropping a database costs more than the migration
		// it anchors: the databases are made before the first pass and
		// dropped after the last (deploy's order: before, after, goose),
		// and in between given an empty public schema — the filled one
		// renamed out of the way, not dropped, so that no file of it is
		// unlinked before the last pass (settle.go).
		create = func(ctx context.Context, name string) error {
			if when != "before" {
				return nil
			}
			return h.exec(ctx, "postgres", `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()+` TEMPLATE template0 OWNER `+owner)
		}
		drop = func(ctx context.Context, name string) error {
			if when == "goose" {
				return h.exec(ctx, "postgres", `DROP DATABASE `+pgx.Identifier{name}.Sanitize())
			}
			return h.exec(ctx, name, `ALTER SCHEMA public RENAME TO `+pgx.Identifier{"anchor_" + when}.Sanitize()+`; `+
				`CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC`)
		}
	default:
		return fmt.Errorf("migration anchor of %s: no per-tenant storage", d.name)
	}
	each := func(fn func(context.Context, string) error) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(h.cfg.Parallel)
		for _, name := range names {
			g.Go(func() error { return fn(gctx, name) })
		}
		return g.Wait()
	}
	if err := each(create); err != nil {
		return fmt.Errorf("migration anchor: create: %w", err)
	}
	dir := filepath.Join(h.dir, "ddl-"+d.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var files []string
	for w := range min(h.cfg.MigrateParallelism, n) {
		var b strings.Builder
		b.WriteString(preamble)
		for i := w; i < n; i += h.cfg.MigrateParallelism {
			b.WriteString(header(names[i]))
			b.WriteString(script)
		}
		f := filepath.Join(dir, fmt.Sprintf("worker-%d.sql", w))
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			return err
		}
		files = append(files, f)
	}
	if when == "goose" {
		// The diagnosis: goose alone, as the strategies run it for each
		// tenant, MigrateParallelism at a time, without the control
		// plane, the version check or the grants around it: into schemas
		// on owner sessions kept from one schema to the next
		// (isolation.Migrators, as the schema strategy), into databases
		// on a connection of each database's own
		// (isolation.MigrateTenantTables: a database needs one).
		var migrators *isolation.Migrators
		if d.name == Schema {
			cfg, err := pgx.ParseConfig(h.cluster.URL("postgres", d.db))
			if err != nil {
				return err
			}
			migrators = isolation.NewMigrators(cfg, h.cfg.MigrateParallelism, time.Minute)
			defer migrators.Close()
		}
		begin := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(h.cfg.MigrateParallelism)
		for _, name := range names {
			g.Go(func() error {
				if migrators != nil {
					_, err := migrators.Migrate(gctx, name)
					return err
				}
				cfg, err := pgx.ParseConfig(h.cluster.URL("postgres", name))
				if err != nil {
					return err
				}
				_, err = isolation.MigrateTenantTables(gctx, cfg, "public")
				return err
			})
		}
		err := g.Wait()
		took := time.Since(begin)
		if err != nil {
			return fmt.Errorf("goose alone: %w", err)
		}
		h.set(d.name+".migrate_goose_s", took.Seconds())
		h.logf("%s: goose alone into %d fresh %ss in %s", d.name, n, d.name, took.Round(time.Millisecond))
		return h.dropAnchor(ctx, d, when, each, drop)
	}
	begin := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range files {
		g.Go(func() error {
			cmd := exec.CommandContext(gctx, bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", f, h.cluster.URL("postgres", connectTo))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("psql -f %s: %w: %s", f, err, strings.TrimSpace(out.String()))
			}
			return nil
		})
	}
	err = g.Wait()
	took := time.Since(begin)
	if err != nil {
		return fmt.Errorf("migration anchor: %w", err)
	}
	h.set(d.name+".migrate_script_"+when+"_s", took.Seconds())
	h.logf("%s: the same DDL as psql scripts into %d fresh %ss in %s (%s migrate)", d.name, n, d.name, took.Round(time.Millisecond), when)
	return h.dropAnchor(ctx, d, when, each, drop)
}

// dropAnchor drops (or, for databases before the last pass, empties) the
// fresh schemas or databases of the anchor's pass when and, after the
// last schemas, vacuums their database, so that the dead catalog rows of
// the drops are not left to the next timed phase (as after the reset).
func (h *harness) dropAnchor(ctx context.Context, d *deployment, when string, each func(func(context.Context, string) error) error, drop func(context.Context, string) error) error {
	if err := each(drop); err != nil {
		return fmt.Errorf("migration anchor: drop: %w", err)
	}
	if d.name == Schema && when == "goose" {
		if err := h.exec(ctx, d.db, `VACUUM (ANALYZE)`); err != nil {
			return err
		}
		// Their files unlinked now, while the schema strategy's data
		// set is loaded (no file made), rather than at a checkpoint in
		// a later deployment's provisioning; no wait: nothing timed
		// against an anchor follows.
		return h.exec(ctx, d.db, `CHECKPOINT`)
	}
	return nil
}

// anchorPasses are the passes of migrateScript, in their order.
var anchorPasses = []string{"before", "after", "goose"}
