package harness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
	"github.com/bulkheadhq/bulkhead/migrations"
)

// Strategy names of the harness: the product's three and the baseline.
const (
	Baseline = "baseline"
	RLS      = isolation.RLS
	Schema   = isolation.Schema
	Database = isolation.Database
)

// Strategies lists them in the order the runs alternate.
var Strategies = []string{Baseline, RLS, Schema, Database}

// CitusPrefix names the deployments of a -citus run that live on the Citus
// coordinator: citus_rls is the rls strategy there, citus_schema the
// schema strategy.
const CitusPrefix = "citus_"

// CitusStrategies are the strategies a -citus run deploys on both clusters.
var CitusStrategies = []string{RLS, Schema}

// node is a server the harness connects to: the plain cluster, or the
// Citus coordinator.
type node interface {
	URL(user, database string) string
}

// deployment is one strategy's database, server and tenants.
type deployment struct {
	name     string // as in the figures: a strategy, baseline, or citus_<strategy>
	strategy string // the product's strategy it runs
	citus    bool   // on the Citus coordinator
	on       node
	db       string // the control-plane database
	srv      *server
	tenants  []placed // by tenant index
	keys     []string // an editor key per tenant, by index
}

func (d *deployment) target() target { return target{name: d.name, url: d.srv.url, keys: d.keys} }

// exec runs sql on database db of the plain cluster as the superuser.
func (h *harness) exec(ctx context.Context, db, sql string, args ...any) error {
	return execOn(ctx, h.cluster, db, sql, args...)
}

// execOn runs sql on database db of n as the superuser.
func execOn(ctx context.Context, n node, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, n.URL("postgres", db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// serverOptions returns the options of the server of database db on n.
func (h *harness) serverOptions(n node, name, db, strategy string) serverOptions {
	return serverOptions{
		name:     name,
		appURL:   n.URL(isolation.AppRole, db),
		ownerURL: n.URL("postgres", db),
		strategy: strategy,
		cfg:      h.cfg,
		log:      h.serverLog,
	}
}

// deploy creates strategy's database, migrates it and starts its server,
// provisions every tenant (timing it), for schema and database takes the
// tenants back to version 0 and times migrating them all again, between
// two timings of the same DDL as plain scripts into as many fresh schemas
// or databases (the migration anchor), and loads the data set.
//
// A deployment named citus_<strategy> lives on the Citus coordinator, in a
// database of its own on every node; migrate distributes its tenant
// tables. Its tenants are not reset and migrated again: migrating them all
// is measured on the plain cluster only.
func (h *harness) deploy(ctx context.Context, name string) (*deployment, error) {
	strategy, citus := strings.CutPrefix(name, CitusPrefix)
	d := &deployment{name: name, strategy: strategy, citus: citus, on: h.cluster, db: "bench_" + strategy}
	if citus {
		d.on = h.citus
		if err := h.createCitusDB(ctx, d.db); err != nil {
			return nil, fmt.Errorf("create database %s on the Citus cluster: %w", d.db, err)
		}
	} else if err := h.exec(ctx, "postgres", `CREATE DATABASE `+pgx.Identifier{d.db}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", d.db, err)
	}
	o := h.serverOptions(d.on, name, d.db, strategy)
	o.migrate = true
	srv, err := startServer(ctx, o)
	if err != nil {
		return nil, err
	}
	d.srv = srv
	if err := h.phase(name+".provision", func() error { return h.provision(ctx, d) }); err != nil {
		return d, err
	}
	if strategy != RLS && !citus {
		if err := h.phase(strategy+".reset", func() error { return h.reset(ctx, d) }); err != nil {
			return d, err
		}
		// The reset's dropped tables unlinked now, not in the timed
		// phases that follow (settle.go).
		if err := h.phase(strategy+".settle", func() error { return h.settle(ctx, "the reset") }); err != nil {
			return d, err
		}
		// The migration anchor before and after: whichever phase comes
		// first after the reset runs slower on a busy machine, and the
		// faster of the two anchors is the one migrate is held to.
		if err := h.phase(strategy+".migrate_script_before", func() error { return h.migrateScript(ctx, d, "before") }); err != nil {
			return d, err
		}
		begin := time.Now()
		report, err := d.srv.control.Migrate(ctx, nil)
		if err != nil {
			return d, fmt.Errorf("migrate all %s tenants: %w", strategy, err)
		}
		h.set(strategy+".migrate_all_s", time.Since(begin).Seconds())
		h.set(strategy+".migrate_all_tenants", float64(len(report.Tenants)))
		h.logf("%s: migrated %d tenants from version 0 in %s", strategy, len(report.Tenants), time.Since(begin).Round(time.Millisecond))
		// Again with every tenant at head: the fixed part of the first.
		begin = time.Now()
		if _, err := d.srv.control.Migrate(ctx, nil); err != nil {
			return d, fmt.Errorf("migrate %s again: %w", strategy, err)
		}
		h.set(strategy+".migrate_noop_s", time.Since(begin).Seconds())
		if err := h.phase(strategy+".migrate_script_after", func() error { return h.migrateScript(ctx, d, "after") }); err != nil {
			return d, err
		}
		if err := h.phase(strategy+".migrate_goose", func() error { return h.migrateScript(ctx, d, "goose") }); err != nil {
			return d, err
		}
		before, _ := h.get(strategy + ".migrate_script_before_s")
		after, _ := h.get(strategy + ".migrate_script_after_s")
		migrate, _ := h.get(strategy + ".migrate_all_s")
		h.set(strategy+".migrate_script_s", min(before, after))
		h.set(strategy+".migrate_vs_script", migrate/min(before, after))
	}
	err = h.phase(name+".load", func() error { return h.load(ctx, d) })
	return d, err
}

// createCitusDB creates database db on every node of the Citus cluster
// with the citus extension, and registers the nodes in the coordinator's,
// as pgcluster.StartCitus does for its postgres database: Citus does not
// propagate CREATE DATABASE from anything but template1 by default.
func (h *harness) createCitusDB(ctx context.Context, db string) error {
	ident := pgx.Identifier{db}.Sanitize()
	nodes := append([]*pgcluster.Cluster{h.citus.Coordinator}, h.citus.Workers...)
	for _, n := range nodes {
		if err := execOn(ctx, n, "postgres", `CREATE DATABASE `+ident); err != nil {
			return err
		}
		if err := execOn(ctx, n, db, `CREATE EXTENSION citus`); err != nil {
			return err
		}
	}
	if err := execOn(ctx, h.citus, db, `SELECT citus_set_coordinator_host('127.0.0.1', $1)`, h.citus.Coordinator.Port()); err != nil {
		return err
	}
	for _, w := range h.citus.Workers {
		if err := execOn(ctx, h.citus, db, `SELECT citus_add_node('127.0.0.1', $1)`, w.Port()); err != nil {
			return err
		}
	}
	return nil
}

// provision creates every tenant through the control plane, as `bulkhead
// tenant create` does, and an editor key for each. The first
// ProvisionSample tenants are created one at a time, each timed: that is
// the provisioning time reported. The rest are created ProvisionParallel
// at a time, to save the harness's time.
func (h *harness) provision(ctx context.Context, d *deployment) error {
	n := len(h.data.Tenants)
	d.tenants, d.keys = make([]placed, n), make([]string, n)
	create := func(i int) (time.Duration, error) {
		spec := h.data.Tenants[i]
		begin := time.Now()
		t, err := d.srv.control.CreateTenant(ctx, spec.Slug, "")
		if err != nil {
			return 0, err
		}
		took := time.Since(begin)
		k, err := d.srv.control.CreateKey(ctx, spec.Slug, auth.Editor)
		if err != nil {
			return 0, err
		}
		d.tenants[i], d.keys[i] = placed{spec: spec, id: t.ID, iso: t.Isolated()}, k.Key
		return took, nil
	}
	sample := min(h.cfg.ProvisionSample, n)
	took := make([]float64, 0, sample)
	begin := time.Now()
	for i := range sample {
		t, err := create(i)
		if err != nil {
			return err
		}
		took = append(took, float64(t)/float64(time.Millisecond))
	}
	var g errgroup.Group
	g.SetLimit(h.cfg.Parallel)
	for i := sample; i < n; i++ {
		g.Go(func() error {
			_, err := create(i)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	slices.Sort(took)
	if len(took) > 0 {
		h.set(d.name+".provision_ms", median(took))
		h.set(d.name+".provision_max_ms", took[len(took)-1])
	}
	h.set(d.name+".provision_all_s", time.Since(begin).Seconds())
	return nil
}

// reset takes every tenant of d back to tenant migration version 0 — no
// tenant table, goose's version table holding only its base row — and
// records that in the control plane, so that migrating them all applies
// the whole migration set to each.
func (h *harness) reset(ctx context.Context, d *deployment) error {
	tables := `DROP TABLE %[1]scost_imports, %[1]sidempotency_keys, %[1]sbudgets, %[1]scost_items, %[1]saccounts; ` +
		`DELETE FROM %[1]s` + migrations.Tenant.Table + ` WHERE version_id > 0`
	switch d.strategy {
	case Schema:
		err := h.eachTenantSchema(ctx, d, func(ctx context.Context, conn *pgx.Conn, t placed) error {
			prefix := pgx.Identifier{schema.Name(t.id)}.Sanitize() + "."
			if _, err := conn.Exec(ctx, fmt.Sprintf(tables, prefix)); err != nil {
				return fmt.Errorf("reset %s: %w", t.spec.Slug, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	case Database:
		err := h.eachTenantDB(ctx, d, func(conn *pgx.Conn, t placed) error {
			if _, err := conn.Exec(ctx, fmt.Sprintf(tables, "public.")); err != nil {
				return err
			}
			_, err := conn.Exec(ctx, `VACUUM (ANALYZE)`) // as the schema's, below
			return err
		})
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("reset %s: no per-tenant storage", d.name)
	}
	if err := h.exec(ctx, d.db, `UPDATE bulkhead.tenants SET version = 0`); err != nil {
		return err
	}
	// The catalogs' dead rows of the drops, vacuumed (and the catalogs
	// analyzed) now rather than by autovacuum during the timed migration
	// that follows.
	if d.name == Schema {
		return h.exec(ctx, d.db, `VACUUM (ANALYZE)`)
	}
	return nil
}

// eachTenantSchema runs fn for each tenant of d, on Parallel superuser
// connections to d's database, each taking a balanced share of the tenants.
func (h *harness) eachTenantSchema(ctx context.Context, d *deployment, fn func(context.Context, *pgx.Conn, placed) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, part := range balance(d.tenants, h.cfg.Parallel) {
		g.Go(func() error {
			conn, err := pgx.Connect(gctx, d.on.URL("postgres", d.db))
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			for _, t := range part {
				if err := fn(gctx, conn, t); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// eachTenantDB runs fn on a superuser connection to each tenant's database,
// Parallel at a time.
func (h *harness) eachTenantDB(ctx context.Context, d *deployment, fn func(*pgx.Conn, placed) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(h.cfg.Parallel)
	for _, t := range d.tenants {
		g.Go(func() error {
			conn, err := pgx.Connect(gctx, h.cluster.URL("postgres", database.DBName(t.id)))
			if err != nil {
				return fmt.Errorf("tenant %s: %w", t.spec.Slug, err)
			}
			defer conn.Close(context.Background())
			if err := fn(conn, t); err != nil {
				return fmt.Errorf("tenant %s: %w", t.spec.Slug, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// load generates the data set into d's tenants and analyzes the tables.
func (h *harness) load(ctx context.Context, d *deployment) error {
	switch d.strategy {
	case RLS:
		// Shared tables: a few statements, each loading a share of the
		// tenants with about the same number of rows.
		g, gctx := errgroup.WithContext(ctx)
		for _, part := range balance(d.tenants, 2*h.cfg.Parallel) {
			g.Go(func() error { return h.loadShared(gctx, d.on, d.db, "public", part) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
		return h.analyze(ctx, d)
	case Schema:
		err := h.eachTenantSchema(ctx, d, func(ctx context.Context, conn *pgx.Conn, t placed) error {
			return h.data.load(ctx, conn, schema.Name(t.id), []placed{t})
		})
		if err != nil {
			return err
		}
		return h.analyze(ctx, d)
	case Database:
		return h.eachTenantDB(ctx, d, func(conn *pgx.Conn, t placed) error {
			if err := h.data.load(ctx, conn, "public", []placed{t}); err != nil {
				return err
			}
			// The tenant tables only: a database-wide VACUUM would also
			// vacuum each database's copy of the catalogs.
			_, err := conn.Exec(ctx, `VACUUM (ANALYZE) public.accounts, public.cost_items, public.budgets`)
			return err
		})
	}
	return fmt.Errorf("load %s: unknown strategy", d.name)
}

// analyze vacuums and analyzes d's database; on Citus also each worker's,
// where the shards are: a VACUUM without a table list stays on the node it
// runs on.
func (h *harness) analyze(ctx context.Context, d *deployment) error {
	if err := execOn(ctx, d.on, d.db, `VACUUM (ANALYZE)`); err != nil {
		return err
	}
	if d.citus {
		for _, w := range h.citus.Workers {
			if err := execOn(ctx, w, d.db, `VACUUM (ANALYZE)`); err != nil {
				return fmt.Errorf("worker on port %d: %w", w.Port(), err)
			}
		}
	}
	return nil
}

func (h *harness) loadShared(ctx context.Context, on node, db, schema string, tenants []placed) error {
	conn, err := pgx.Connect(ctx, on.URL("postgres", db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return h.data.load(ctx, conn, schema, tenants)
}

// balance splits tenants into at most n parts of about equal row counts,
// largest tenants first.
func balance(tenants []placed, n int) [][]placed {
	sorted := slices.Clone(tenants)
	sort.SliceStable(sorted, func(a, b int) bool { return sorted[a].spec.Rows > sorted[b].spec.Rows })
	n = max(min(n, len(sorted)), 1)
	parts := make([][]placed, n)
	rows := make([]int, n)
	for _, t := range sorted {
		j := 0
		for k := range rows {
			if rows[k] < rows[j] {
				j = k
			}
		}
		parts[j] = append(parts[j], t)
		rows[j] += t.spec.Rows
	}
	return parts
}

// deployBaseline copies the RLS database (its control plane, tenants, keys
// and data), which must have no sessions, and starts the baseline server on
// the copy: the RLS server's configuration with the tenant work going
// through noTenancy. Row-Level Security is disabled on the copy's tenant
// tables only once the server has passed its start-up safety check, which
// would rightly refuse them.
func (h *harness) deployBaseline(ctx context.Context, rls *deployment) (*deployment, error) {
	d := &deployment{name: Baseline, strategy: RLS, on: h.cluster, db: "bench_baseline", tenants: rls.tenants, keys: rls.keys}
	err := h.phase("baseline.copy", func() error {
		ident := pgx.Identifier{d.db}.Sanitize()
		if err := h.exec(ctx, "postgres", `CREATE DATABASE `+ident+` TEMPLATE `+pgx.Identifier{rls.db}.Sanitize()+` STRATEGY FILE_COPY`); err != nil {
			return err
		}
		// A copy has the privileges of a new database: PUBLIC may create
		// temporary tables again until migrate's REVOKE is made again.
		return h.exec(ctx, "postgres", `REVOKE TEMPORARY ON DATABASE `+ident+` FROM PUBLIC`)
	})
	if err != nil {
		return nil, fmt.Errorf("copy %s: %w", rls.db, err)
	}
	o := h.serverOptions(h.cluster, Baseline, d.db, RLS)
	o.baseline = true
	if d.srv, err = startServer(ctx, o); err != nil {
		return nil, err
	}
	if err := h.exec(ctx, d.db, noRLS()); err != nil {
		return d, fmt.Errorf("disable RLS on the baseline: %w", err)
	}
	return d, nil
}

// noRLS is the SQL that takes Row-Level Security off the shared tenant
// tables of a baseline database.
func noRLS() string {
	var stmts []string
	for _, t := range []string{"accounts", "cost_items", "budgets", "idempotency_keys", "cost_imports"} {
		stmts = append(stmts, `ALTER TABLE public.`+t+` NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY`)
	}
	return strings.Join(stmts, "; ")
}

// restart starts d's server again after it was stopped.
func (h *harness) restart(ctx context.Context, d *deployment) error {
	srv, err := startServer(ctx, h.serverOptions(d.on, d.name, d.db, d.strategy))
	if err != nil {
		return err
	}
	d.srv = srv
	return nil
}

// stopAll stops every server that runs, whatever happens to the others.
func stopAll(deps map[string]*deployment) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, d := range deps {
		if d == nil || d.srv == nil {
			continue
		}
		wg.Go(func() {
			if err := d.srv.stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
