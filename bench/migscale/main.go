// Command migscale measures, at a given number of tenant schemas in one
// database, what migrating more schemas costs a schema: the tenant
// migrations as a psql script (the bench's anchor) against goose on kept
// owner sessions (isolation.Migrators, as the schema strategy runs it), in
// turns, each into its own fresh schemas:
//
//	go run ./internal/cmd/withpg -- go run ./bench/migscale -grow 10000 -k 1000 -modes script,goose,script,goose
//
// -grow first adds tenant schemas (t_NNNNN: the tenant tables and a goose
// version table, applied by psql two at a time) up to that many. Each
// turn then makes -k fresh schemas (untimed), migrates them -p at a time,
// and prints the wall time per schema, per tenth of the schemas done (what
// grows as a session goes on shows there) and, when the server's processes
// can be read from /proc, the server's CPU time per schema. With
// pg_stat_statements loaded (shared_preload_libraries) it prints the
// statements that took longest, -top of them. Fresh schemas are kept
// (-drop drops them after each turn, and makes the next turn pay for their
// files: see bench/harness/settle.go).
//
// The issue-17 measurements behind settle.go were made with it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/bench/harness"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "migscale:", err)
		os.Exit(1)
	}
}

type config struct {
	url, psql  string
	grow, k, p int
	top        int
	drop       bool
	modes      []string
}

func run() error {
	var c config
	var modes string
	flag.StringVar(&c.url, "url", os.Getenv("BULKHEAD_TEST_DATABASE_URL"), "superuser DSN of the database (default: $BULKHEAD_TEST_DATABASE_URL)")
	flag.IntVar(&c.grow, "grow", 0, "first add tenant schemas up to this many")
	flag.IntVar(&c.k, "k", 200, "fresh schemas per turn")
	flag.IntVar(&c.p, "p", 4, "schemas migrated at a time (psql processes, or migrators)")
	flag.IntVar(&c.top, "top", 12, "statements to print per turn, with pg_stat_statements")
	flag.BoolVar(&c.drop, "drop", false, "drop each turn's fresh schemas after it")
	flag.StringVar(&modes, "modes", "script,goose", "turns, in order: script (psql), goose (isolation.Migrators), goose+grant (and isolation.GrantTenantTables)")
	flag.Parse()
	if c.url == "" {
		return fmt.Errorf("no -url and no BULKHEAD_TEST_DATABASE_URL")
	}
	c.modes = strings.Split(modes, ",")
	for _, m := range c.modes {
		if m != "script" && m != "goose" && m != "goose+grant" {
			return fmt.Errorf("mode %q: want script, goose or goose+grant", m)
		}
	}
	bin, err := pgcluster.FindBin()
	if err != nil {
		return err
	}
	c.psql = filepath.Join(bin, "psql")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, c.url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `DO $$ BEGIN CREATE ROLE `+isolation.OwnerRole+`; EXCEPTION WHEN duplicate_object THEN END $$`); err != nil {
		return err
	}
	// Statements are counted only where the library is preloaded.
	_, err = pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	if err == nil {
		_, err = pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	}
	stats := err == nil
	n, err := count(ctx, pool)
	if err != nil {
		return err
	}
	if c.grow > n {
		var names []string
		for i := n; i < c.grow; i++ {
			names = append(names, fmt.Sprintf("t_%05d", i))
		}
		if err := createSchemas(ctx, pool, names); err != nil {
			return err
		}
		took, _, err := c.scripts(ctx, names, 2, gooseTable)
		if err != nil {
			return err
		}
		fmt.Printf("# grew %d schemas in %s\n", len(names), took.Round(time.Millisecond))
		if _, err := pool.Exec(ctx, `VACUUM (ANALYZE)`); err != nil {
			return err
		}
		if n, err = count(ctx, pool); err != nil {
			return err
		}
	}
	for turn, mode := range c.modes {
		names := make([]string, c.k)
		for i := range names {
			names[i] = fmt.Sprintf("fresh_%d_%d_%04d", time.Now().Unix(), turn, i)
		}
		if err := createSchemas(ctx, pool, names); err != nil {
			return err
		}
		if stats {
			if _, err := pool.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
				return err
			}
		}
		cpu0, cpuOK := serverCPU()
		var took time.Duration
		var ends []time.Time
		if mode == "script" {
			took, ends, err = c.scripts(ctx, names, c.p, "")
		} else {
			took, ends, err = c.goose(ctx, pool, names, mode == "goose+grant")
		}
		if err != nil {
			return err
		}
		cpu1, _ := serverCPU()
		fmt.Printf("%s at %d tenant schemas, %d fresh, %d at a time: %s, %.1f ms a schema", mode, n, c.k, c.p,
			took.Round(time.Millisecond), float64(took.Microseconds())/1000/float64(c.k))
		if cpuOK {
			fmt.Printf(", server CPU %.1f ms a schema", (cpu1-cpu0)*1000/float64(c.k))
		}
		fmt.Printf("\n  ms a schema by tenth: %s\n", tenths(took, ends))
		if stats && c.top > 0 {
			if err := top(ctx, pool, c.top); err != nil {
				return err
			}
		}
		if c.drop {
			for _, name := range names {
				if _, err := pool.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
					return err
				}
			}
			if _, err := pool.Exec(ctx, `VACUUM (ANALYZE)`); err != nil {
				return err
			}
		}
	}
	return nil
}

// gooseTable is what goose leaves in a tenant schema besides the tables.
const gooseTable = `CREATE TABLE goose_tenant (id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
	version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp NOT NULL DEFAULT now());
INSERT INTO goose_tenant (version_id, is_applied) VALUES (0, true), (1, true), (2, true), (3, true);
`

// scripts applies the tenant script (and extra) to names with p psql
// processes, as the bench's anchor does, and returns the time taken and
// when each schema was done.
func (c config) scripts(ctx context.Context, names []string, p int, extra string) (time.Duration, []time.Time, error) {
	script, err := harness.TenantScript()
	if err != nil {
		return 0, nil, err
	}
	dir, err := os.MkdirTemp("", "migscale")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	var files []string
	for w := range min(p, len(names)) {
		var b strings.Builder
		b.WriteString("SET ROLE " + pgx.Identifier{isolation.OwnerRole}.Sanitize() + ";\n")
		for i := w; i < len(names); i += p {
			b.WriteString("SET search_path = " + pgx.Identifier{names[i]}.Sanitize() + ";\n")
			b.WriteString(script)
			b.WriteString(extra)
			b.WriteString("\\! date +%s.%N\n") // when this schema was done
		}
		f := filepath.Join(dir, fmt.Sprintf("worker-%d.sql", w))
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			return 0, nil, err
		}
		files = append(files, f)
	}
	var mu sync.Mutex
	var ends []time.Time
	begin := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range files {
		g.Go(func() error {
			cmd := exec.CommandContext(gctx, c.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", f, c.url)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("psql -f %s: %w: %s", f, err, strings.TrimSpace(errOut.String()))
			}
			mu.Lock()
			defer mu.Unlock()
			for line := range strings.Lines(out.String()) {
				var sec float64
				if _, err := fmt.Sscanf(strings.TrimSpace(line), "%f", &sec); err == nil {
					ends = append(ends, time.Unix(0, int64(sec*1e9)))
				}
			}
			return nil
		})
	}
	err = g.Wait()
	return time.Since(begin), sorted(ends), err
}

// goose migrates names on isolation.Migrators, p at a time, and with grant
// grants the owner DML on their tables as the schema strategy's migrate
// grants the tenant's role.
func (c config) goose(ctx context.Context, pool *pgxpool.Pool, names []string, grant bool) (time.Duration, []time.Time, error) {
	m := isolation.NewMigrators(pool.Config().ConnConfig, c.p, time.Minute)
	defer m.Close()
	var mu sync.Mutex
	var ends []time.Time
	begin := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.p)
	for _, name := range names {
		g.Go(func() error {
			_, err := m.Migrate(gctx, name)
			if err == nil && grant {
				err = isolation.GrantTenantTables(gctx, pool, name, isolation.OwnerRole)
			}
			mu.Lock()
			ends = append(ends, time.Now())
			mu.Unlock()
			return err
		})
	}
	err := g.Wait()
	return time.Since(begin), sorted(ends), err
}

// sorted returns ends in order.
func sorted(ends []time.Time) []time.Time {
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	return ends
}

// tenths returns the wall time per schema of each tenth of the schemas
// done, in order, the first counted from took before the last.
func tenths(took time.Duration, ends []time.Time) string {
	n := len(ends)
	if n < 10 {
		return "(too few schemas)"
	}
	begin := ends[len(ends)-1].Add(-took)
	var out []string
	prev := begin
	for d := 1; d <= 10; d++ {
		i := d*n/10 - 1
		lo := (d - 1) * n / 10
		out = append(out, fmt.Sprintf("%.1f", float64(ends[i].Sub(prev).Microseconds())/1000/float64(i+1-lo)))
		prev = ends[i]
	}
	return strings.Join(out, " ")
}

func count(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var n, rels int
	err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'), (SELECT count(*) FROM pg_class)`).Scan(&n, &rels)
	if err == nil {
		fmt.Printf("# %d tenant schemas, %d relations in the database\n", n, rels)
	}
	return n, err
}

func createSchemas(ctx context.Context, pool *pgxpool.Pool, names []string) error {
	for chunk := range slices.Chunk(names, 500) {
		var b strings.Builder
		for _, n := range chunk {
			b.WriteString("CREATE SCHEMA " + pgx.Identifier{n}.Sanitize() + " AUTHORIZATION " + pgx.Identifier{isolation.OwnerRole}.Sanitize() + ";")
		}
		if _, err := pool.Exec(ctx, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// top prints the n statements that took longest since the reset.
func top(ctx context.Context, pool *pgxpool.Pool, n int) error {
	rows, err := pool.Query(ctx, `
		SELECT sum(calls), sum(total_exec_time), sum(total_exec_time) / sum(calls),
		       left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS q
		FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
		GROUP BY q ORDER BY 2 DESC LIMIT $1`, n)
	if err != nil {
		return err
	}
	defer rows.Close()
	fmt.Println("  calls   total ms  ms a call  statement")
	for rows.Next() {
		var calls int64
		var total, per float64
		var q string
		if err := rows.Scan(&calls, &total, &per, &q); err != nil {
			return err
		}
		fmt.Printf("  %5d %10.1f %10.3f  %s\n", calls, total, per, q)
	}
	return rows.Err()
}

// serverCPU returns the CPU seconds (user and system) of the postgres
// processes this process can see: those running, and the postmaster's
// children that have ended.
func serverCPU() (float64, bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	var ticks int64
	seen := false
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(postgres") {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) < 15 {
			continue
		}
		var v [4]int64
		for j := range v {
			fmt.Sscan(f[11+j], &v[j]) // utime, stime, cutime, cstime
		}
		ticks += v[0] + v[1] + v[2] + v[3]
		seen = true
	}
	return float64(ticks) / 100, seen // USER_HZ
}
