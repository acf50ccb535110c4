// Package harness measures what tenant isolation costs: it starts a
// throwaway PostgreSQL, loads one skewed data set into a deployment of each
// isolation strategy (rls, schema, database) and into a baseline with no
// tenancy in the database, serves each with the real HTTP server in this
// process, and drives them over loopback with vegeta, alternating the
// strategies run by run. The figures go to bench/report.
//
// The baseline exists only here: a copy of the RLS database with Row-Level
// Security disabled, served through a strategy whose transactions bind
// nothing (noTenancy), so that the application's own tenant_id filter is
// the only one left.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/bench/report"
	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

// Config sizes a run. The zero value is not usable: start from Defaults.
type Config struct {
	// Tenants is how many tenants each strategy gets; the first Large of
	// them have LargeRows cost items each, the others SmallRows on
	// average (exponentially distributed).
	Tenants, Large, LargeRows, SmallRows int
	// Rounds is how many times each run is repeated; medians are reported.
	Rounds int
	// Duration is the length of each saturation run, FixedDuration that of
	// each run at a fixed rate (longer: the rate is low where a strategy
	// saturates early, and p99 needs samples), Warmup that of the
	// unmeasured run of each workload and strategy before the first round.
	Duration, FixedDuration, Warmup time.Duration
	// WarmupPasses is how many times the warm-up sweep, before the timed
	// warm-up, sends each read workload's request to every tenant of each
	// strategy, in turn, as fast as Workers clients go; WarmupLimit bounds
	// each such sweep (one workload on one strategy). A server that has
	// run a while has served each tenant's reads on most of its
	// connections: the schema strategy's backends then hold each tenant's
	// catalog entries, which a short run's first requests would otherwise
	// pay for (about 0.3 ms of backend CPU each, at 1,000 tenants).
	// Ingest is not swept: each of its requests adds rows.
	WarmupPasses int
	WarmupLimit  time.Duration
	// Workers is the number of concurrent clients of a saturation run.
	Workers int
	// RateShare sets the fixed rate of the latency runs of a workload: this
	// share of the lowest saturation throughput any strategy reached on it,
	// so that every strategy runs below saturation.
	RateShare float64
	// HotTenants is the active set of the hot-set runs (hotSet): at most
	// Budget, 0 for none.
	HotTenants int
	// Budget is the database strategy's connection budget
	// (isolation.database.max_connections); AppConns the serving pool's
	// size (database.max_connections).
	Budget, AppConns int
	// MigrateParallelism is isolation.migrate_parallelism.
	MigrateParallelism int
	// Parallel bounds the harness's own concurrent work: provisioning past
	// the sample, loading, resetting.
	Parallel int
	// ProvisionSample is how many tenants are provisioned one at a time,
	// each timed.
	ProvisionSample int
	// FocusRows is the size of the FOCUS billing export loaded into a new
	// tenant of each strategy (0: no FOCUS workload).
	FocusRows int
	// Settle waits, before the timed migration phases, until the files
	// of the relations dropped before them no longer slow the creation
	// of new ones (settle.go); it waits only on ext4 without a journal.
	Settle bool
	// Strategies and Workloads select what runs (default: all).
	Strategies, Workloads []string
	// Dir holds the cluster; empty: a temporary directory, removed after.
	Dir string
	// Keep keeps the cluster's directory.
	Keep bool
	// Seed makes the data set and the request sequences repeatable.
	Seed uint64
	// Noisy runs the noisy-neighbour workload after the others: a small
	// tenant's point reads at NoisyRate for NoisyDuration alone, then under
	// each attack (NoisyIdleConns idle connections for the last).
	Noisy          bool
	NoisyDuration  time.Duration
	NoisyRate      float64
	NoisyIdleConns int
	// Citus runs the rls and schema strategies (those of Strategies) on
	// the plain cluster and again on a Citus coordinator with
	// CitusWorkers workers on this machine, alternating the two run by
	// run, and reports the Citus deployments (citus_rls, citus_schema)
	// against the plain ones of the same round (<s>.<w>.<measure>_vs_plain
	// under citus_<s>). No baseline, database strategy, noisy neighbour
	// or FOCUS export in such a run.
	Citus        bool
	CitusWorkers int
	// Logf receives progress; nil discards it.
	Logf func(format string, args ...any)
}

// Defaults is the configuration of `make bench`.
func Defaults() Config {
	return Config{
		Tenants: 1000, Large: 10, LargeRows: 200_000, SmallRows: 1000,
		Rounds: 5, Duration: 1500 * time.Millisecond, FixedDuration: 3 * time.Second, Warmup: 500 * time.Millisecond,
		WarmupPasses: 20, WarmupLimit: 20 * time.Second,
		Workers: 8, RateShare: 0.5,
		Budget: 50, HotTenants: 40, AppConns: 20, MigrateParallelism: 4,
		Parallel: 4, ProvisionSample: 25, FocusRows: 1_000_000, Settle: true,
		Strategies: Strategies, Workloads: Workloads,
		Seed:  8,
		Noisy: true, NoisyDuration: 5 * time.Second, NoisyRate: 50, NoisyIdleConns: 20_000,
		CitusWorkers: 2,
	}
}

// Validate reports what makes c unusable.
func (c Config) Validate() error {
	var errs []error
	if c.Tenants < 1 || c.Large < 0 || c.Large > c.Tenants {
		errs = append(errs, fmt.Errorf("tenants %d, large %d: want 0 <= large <= tenants, tenants >= 1", c.Tenants, c.Large))
	}
	for name, v := range map[string]int{"large-rows": c.LargeRows, "small-rows": c.SmallRows, "rounds": c.Rounds,
		"workers": c.Workers, "budget": c.Budget, "app-conns": c.AppConns, "parallel": c.Parallel,
		"migrate-parallelism": c.MigrateParallelism} {
		if v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want at least 1", name, v))
		}
	}
	if c.FocusRows < 0 {
		errs = append(errs, fmt.Errorf("focus rows %d: want 0 or more", c.FocusRows))
	}
	if c.Duration <= 0 || c.FixedDuration <= 0 || c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("duration %s, fixed duration %s, warmup %s: want positive durations", c.Duration, c.FixedDuration, c.Warmup))
	}
	if c.WarmupPasses < 0 || (c.WarmupPasses > 0 && c.WarmupLimit <= 0) {
		errs = append(errs, fmt.Errorf("warm-up passes %d, limit %s: want 0 passes, or some and a positive limit", c.WarmupPasses, c.WarmupLimit))
	}
	if c.Noisy && (c.NoisyDuration <= 0 || c.NoisyRate <= 0 || c.NoisyIdleConns < 0) {
		errs = append(errs, fmt.Errorf("noisy duration %s, rate %g, idle connections %d: want a positive duration and rate", c.NoisyDuration, c.NoisyRate, c.NoisyIdleConns))
	}
	if slices.Contains(c.Strategies, Database) && (c.HotTenants < 0 || c.HotTenants > min(c.Budget, c.Tenants)) {
		errs = append(errs, fmt.Errorf("hot tenants %d: want 0 to the budget (%d) and the tenants (%d)", c.HotTenants, c.Budget, c.Tenants))
	}
	if c.RateShare <= 0 || c.RateShare > 1 {
		errs = append(errs, fmt.Errorf("rate share %g: want (0, 1]", c.RateShare))
	}
	for _, s := range c.Strategies {
		if !slices.Contains(Strategies, s) {
			errs = append(errs, fmt.Errorf("strategy %q: want one of %s", s, strings.Join(Strategies, ", ")))
		}
	}
	for _, w := range c.Workloads {
		if !slices.Contains(Workloads, w) {
			errs = append(errs, fmt.Errorf("workload %q: want one of %s", w, strings.Join(Workloads, ", ")))
		}
	}
	if c.Citus {
		for _, s := range c.Strategies {
			if !slices.Contains(CitusStrategies, s) {
				errs = append(errs, fmt.Errorf("strategy %q with citus: want %s", s, strings.Join(CitusStrategies, ", ")))
			}
		}
		if c.Noisy || c.FocusRows > 0 {
			errs = append(errs, errors.New("citus runs no noisy neighbour and no FOCUS export: want noisy off and focus rows 0"))
		}
		if c.CitusWorkers < 1 {
			errs = append(errs, fmt.Errorf("citus workers %d: want at least 1", c.CitusWorkers))
		}
	}
	if len(c.Strategies) == 0 || len(c.Workloads) == 0 {
		errs = append(errs, errors.New("no strategy or no workload selected"))
	}
	return errors.Join(errs...)
}

// harness is one run's state.
type harness struct {
	cfg       Config
	data      *dataset
	cluster   *pgcluster.Cluster
	citus     *pgcluster.Citus // -citus only
	dir       string
	serverLog io.Writer
	logf      func(string, ...any)
	begin     time.Time

	mu      sync.Mutex
	figures map[string]float64
}

func (h *harness) set(name string, v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.figures[name] = v
}

func (h *harness) get(name string) (float64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.figures[name]
	return v, ok
}

// phase runs fn and records how long it took as phase.<name>_s.
func (h *harness) phase(name string, fn func() error) error {
	begin := time.Now()
	err := fn()
	took := time.Since(begin)
	h.set("phase."+name+"_s", took.Seconds())
	h.logf("%s: %s", name, took.Round(time.Millisecond))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Run runs the benchmark that cfg describes and returns its results. It
// starts and stops its own PostgreSQL; ctx ends it early.
func Run(ctx context.Context, cfg Config) (*report.Results, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	// The baseline is a copy of the RLS deployment.
	if slices.Contains(cfg.Strategies, Baseline) && !slices.Contains(cfg.Strategies, RLS) {
		cfg.Strategies = append(cfg.Strategies, RLS)
	}
	cfg.Strategies = slices.DeleteFunc(slices.Clone(Strategies), func(s string) bool { return !slices.Contains(cfg.Strategies, s) })
	if cfg.Citus {
		// Each strategy on the plain cluster, then on Citus: the two runs
		// compared are next to each other in every round.
		var both []string
		for _, s := range cfg.Strategies {
			both = append(both, s, CitusPrefix+s)
		}
		cfg.Strategies = both
	}
	cfg.Workloads = slices.DeleteFunc(slices.Clone(Workloads), func(w string) bool { return !slices.Contains(cfg.Workloads, w) })

	h := &harness{cfg: cfg, data: newDataset(cfg), logf: cfg.Logf, figures: map[string]float64{}, begin: time.Now()}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "bulkhead-bench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if !cfg.Keep {
		defer os.RemoveAll(dir)
	}
	h.dir = dir
	logFile, err := os.Create(filepath.Join(dir, "servers.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	h.serverLog = logFile
	h.logf("data set: %s", h.data.describe())

	var sharedBuffers string
	err = h.phase("cluster", func() (err error) {
		h.cluster, sharedBuffers, err = startCluster(ctx, dir, h.data.Rows, h.logf)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := h.cluster.Stop(); err != nil {
			h.logf("stop cluster: %v", err)
		}
	}()
	var citusBuffers string
	if cfg.Citus {
		err = h.phase("citus_cluster", func() (err error) {
			h.citus, citusBuffers, err = startCitus(ctx, dir, h.data.Rows, cfg.CitusWorkers, h.logf)
			return err
		})
		defer func() {
			if err := h.citus.Stop(); err != nil {
				h.logf("stop Citus cluster: %v", err)
			}
		}()
		if err != nil {
			return nil, err
		}
	}
	admin, err := pgx.Connect(ctx, h.cluster.URL("postgres", "postgres"))
	if err != nil {
		return nil, err
	}
	m := machine(ctx, admin, sharedBuffers)
	admin.Close(context.Background())
	if h.citus != nil {
		if m.Citus, err = citusVersion(ctx, h.citus); err != nil {
			return nil, err
		}
	}

	deps := map[string]*deployment{}
	defer func() {
		if err := stopAll(deps); err != nil {
			h.logf("%v", err)
		}
	}()
	if err := h.deployAll(ctx, deps); err != nil {
		return nil, err
	}
	if err := h.measure(ctx, deps); err != nil {
		return nil, err
	}
	if cfg.Noisy {
		if err := h.phase("noisy", func() error { return h.noisyNeighbour(ctx, deps) }); err != nil {
			return nil, err
		}
	}
	if err := h.focus(ctx, deps); err != nil {
		return nil, err
	}
	var plans map[string]string
	err = h.phase("diagnose", func() (err error) {
		plans, err = h.diagnose(ctx, deps)
		return err
	})
	if err != nil {
		return nil, err
	}
	if cfg.Citus {
		h.set("citus.workers", float64(cfg.CitusWorkers))
		h.set("run.rounds", float64(cfg.Rounds))
	}
	h.set("dataset.tenants", float64(len(h.data.Tenants)))
	h.set("dataset.large_tenants", float64(len(h.data.Large)))
	h.set("dataset.cost_rows", float64(h.data.Rows))
	h.set("run.total_s", time.Since(h.begin).Seconds())
	settings := map[string]string{
		"data set":                      h.data.describe(),
		"requests":                      fmt.Sprintf("%.0f%% to the large tenants, the rest spread uniformly over the small ones; ingest: %d rows per request", largeShare*100, ingestRows),
		"runs":                          fmt.Sprintf("%d rounds; each round runs every workload on every strategy in turn (%s), %s per saturation run and %s per fixed-rate run, after %s and a %s warm-up", cfg.Rounds, strings.Join(cfg.Strategies, ", "), cfg.Duration, cfg.FixedDuration, sweepText(cfg), cfg.Warmup),
		"saturation":                    fmt.Sprintf("%d concurrent clients, no pacing", cfg.Workers),
		"fixed rate":                    fmt.Sprintf("%.0f%% of the lowest median saturation throughput of the workload across strategies; and, per strategy, %.0f%% of its own (own_*)", cfg.RateShare*100, cfg.RateShare*100),
		"pgbench anchors":               fmt.Sprintf("pgbench -M prepared, %d clients, the workload's statement with its values written in (%d scripts drawn like the requests), on the baseline's database as the serving role, in each saturation round after the strategies; pgbench_connect adds -C (a new connection per transaction)", cfg.Workers, anchorScripts),
		"serving pool":                  fmt.Sprintf("%d connections (database.max_connections)", cfg.AppConns),
		"database strategy":             fmt.Sprintf("budget %d connections (isolation.database.max_connections)", cfg.Budget),
		"hot set":                       hotSettings(cfg),
		"migrate parallelism":           fmt.Sprint(cfg.MigrateParallelism),
		"PostgreSQL settings":           "fsync, synchronous_commit and full_page_writes off; wal_level minimal; jit off; shared_preload_libraries plpgsql (the README's advice for the database strategy); shared_buffers " + sharedBuffers,
		"provisioning timed on":         fmt.Sprintf("the first %d tenants, created one at a time", min(cfg.ProvisionSample, cfg.Tenants)),
		"load generator":                "vegeta " + m.Vegeta + ", in the same process as the servers, over loopback",
		"GOMAXPROCS":                    fmt.Sprint(runtime.GOMAXPROCS(0)),
		"FOCUS export":                  fmt.Sprintf("%d rows of FOCUS 1.2 (45 columns, 200 services, 50 sub accounts, 2-5 tags a row) loaded through HTTP into a new tenant of each strategy, then the same rows COPYed (binary) into the same table by a superuser", cfg.FocusRows),
		"harness wall time (s)":         fmt.Sprintf("%.0f", time.Since(h.begin).Seconds()),
		"load average (1 min) at start": fmt.Sprintf("%.2f", m.LoadAvg),
		"noisy neighbour":               noisySettings(cfg),
		"before timed migrations":       h.settleSettings(),
	}
	if cfg.Citus {
		delete(settings, "noisy neighbour")
		delete(settings, "FOCUS export")
		delete(settings, "database strategy")
		delete(settings, "pgbench anchors")
		settings["Citus cluster"] = citusSettings(cfg, m, citusBuffers)
	}
	return &report.Results{
		Machine:    m,
		Figures:    h.figures,
		Strategies: cfg.Strategies,
		Workloads:  cfg.Workloads,
		Plans:      plans,
		Settings:   settings,
	}, nil
}

// deployAll deploys every selected strategy. The RLS server is stopped
// while its database is copied for the baseline, then started again.
func (h *harness) deployAll(ctx context.Context, deps map[string]*deployment) error {
	has := func(s string) bool { return slices.Contains(h.cfg.Strategies, s) }
	if has(RLS) {
		d, err := h.deploy(ctx, RLS)
		deps[RLS] = d
		if err != nil {
			return err
		}
		if has(Baseline) {
			if err := d.srv.stop(ctx); err != nil {
				return err
			}
			d.srv = nil
			if deps[Baseline], err = h.deployBaseline(ctx, d); err != nil {
				return err
			}
			if err := h.restart(ctx, d); err != nil {
				return err
			}
		}
	}
	for _, s := range []string{CitusPrefix + RLS, Schema, CitusPrefix + Schema, Database} {
		if has(s) {
			d, err := h.deploy(ctx, s)
			deps[s] = d
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// run is one measured run.
type run struct {
	strategy, workload string
	round              int
	out                outcome
}

// measure runs the load: a warm-up of every workload on every strategy,
// then Rounds rounds of saturation runs, then Rounds rounds of runs at a
// fixed rate per workload, each round alternating the strategies. The
// database strategy's sessions are sampled throughout.
func (h *harness) measure(ctx context.Context, deps map[string]*deployment) error {
	q := newRequests(h.data)
	conn, err := pgx.Connect(ctx, h.cluster.URL("postgres", "postgres"))
	if err != nil {
		return err
	}
	smp := startSampler(ctx, conn, 50*time.Millisecond)
	defer func() {
		if smp != nil {
			smp.Stop()
		}
	}()
	everyone := h.data.everyone()
	do := func(strategy, w string, pop population, round int, rate float64, d time.Duration) outcome {
		runtime.GC() // the previous run's garbage is not this one's cost
		seed := h.cfg.Seed<<32 | uint64(round)<<8 | uint64(slices.Index(Workloads, w))
		return attack(ctx, q.targeter(w, deps[strategy].target(), pop, seed), rate, h.cfg.Workers, d)
	}
	check := func(r run) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.out.ok == 0 {
			return fmt.Errorf("%s %s round %d: no request succeeded (%d failed, first: %s)",
				r.strategy, r.workload, r.round, r.out.failed, r.out.firstError)
		}
		if r.out.failed > 0 {
			h.logf("%s %s round %d: %d of %d requests failed, first: %s",
				r.strategy, r.workload, r.round, r.out.failed, r.out.ok+r.out.failed, r.out.firstError)
		}
		return nil
	}

	err = h.phase("warmup_sweep", func() error {
		for _, s := range h.cfg.Strategies {
			for _, w := range h.cfg.Workloads {
				if h.cfg.WarmupPasses == 0 || w == Ingest {
					continue
				}
				runtime.GC()
				seed := h.cfg.Seed<<32 | 0xff<<8 | uint64(slices.Index(Workloads, w))
				tr := q.sweeper(w, deps[s].target(), everyone, h.cfg.WarmupPasses, seed)
				r := run{s, w, -1, attack(ctx, tr, 0, h.cfg.Workers, h.cfg.WarmupLimit)}
				if err := check(r); err != nil {
					return err
				}
				want := h.cfg.WarmupPasses * everyone.size()
				h.logf("warm-up sweep %-13s %-8s %d of %d requests in %s", w, s, r.out.ok+r.out.failed, want, r.out.elapsed.Round(time.Millisecond))
				h.set(s+"."+w+".warmup_sweep_requests", float64(r.out.ok+r.out.failed))
				h.set(s+"."+w+".warmup_sweep_share", float64(r.out.ok+r.out.failed)/float64(want))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = h.phase("warmup", func() error {
		for _, w := range h.cfg.Workloads {
			for _, s := range h.cfg.Strategies {
				if h.cfg.Warmup <= 0 {
					continue
				}
				r := run{s, w, -1, do(s, w, everyone, 0, 0, h.cfg.Warmup)}
				if err := check(r); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	// The pgbench anchors run beside the strategies, round by round, on
	// the baseline's database (the same server, the same data).
	anchorFiles := map[string][]string{}
	bin, err := pgbench()
	switch {
	case deps[Baseline] == nil:
	case err != nil:
		h.logf("no pgbench anchors: %v", err)
	default:
		for _, w := range h.cfg.Workloads {
			if _, ok := anchored[w]; ok {
				if anchorFiles[w], err = h.writeAnchorScripts(filepath.Join(h.dir, "pgbench"), w, deps[Baseline]); err != nil {
					return err
				}
			}
		}
	}
	var saturated, fixed []run
	// The CPU time of each saturation run: the database servers' (on a
	// -citus run the plain server's, the coordinator's and the workers'
	// apart) and this process's.
	cpu := map[string]*cpuUse{}
	meter := h.newCPUMeter(ctx)
	err = h.phase("saturation", func() error {
		for round := range h.cfg.Rounds {
			for _, w := range h.cfg.Workloads {
				for _, s := range h.cfg.Strategies {
					var before cpuSample
					if meter != nil {
						b, err := meter.sample()
						if err != nil {
							return err
						}
						before = b
					}
					r := run{s, w, round, do(s, w, everyone, round, 0, h.cfg.Duration)}
					if err := check(r); err != nil {
						return err
					}
					if meter != nil {
						after, err := meter.sample()
						if err != nil {
							return err
						}
						u := cpu[s+"."+w]
						if u == nil {
							u = &cpuUse{}
							cpu[s+"."+w] = u
						}
						u.add(before, after, r.out.ok)
					}
					h.logf("saturation %d %-13s %-8s %8.1f req/s", round, w, s, r.out.throughput())
					saturated = append(saturated, r)
				}
				for _, a := range anchored[w] {
					if anchorFiles[w] == nil {
						continue
					}
					runtime.GC()
					out, err := h.runAnchor(ctx, bin, a, anchorFiles[w])
					if err != nil {
						return err
					}
					h.logf("saturation %d %-13s %-8s %8.1f tps", round, w, a, out.throughput())
					saturated = append(saturated, run{a, w, round, out})
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	rates := map[string]float64{}
	for _, w := range h.cfg.Workloads {
		lowest := math.Inf(1)
		for _, s := range h.cfg.Strategies {
			lowest = min(lowest, median(values(saturated, s, w, func(o outcome) float64 { return o.throughput() })))
		}
		rates[w] = max(lowest*h.cfg.RateShare, 1)
		h.set(w+".fixed_rate_rps", rates[w])
	}
	err = h.phase("fixed_rate", func() error {
		for round := range h.cfg.Rounds {
			for _, w := range h.cfg.Workloads {
				for _, s := range h.cfg.Strategies {
					r := run{s, w, round, do(s, w, everyone, round, rates[w], h.cfg.FixedDuration)}
					if err := check(r); err != nil {
						return err
					}
					h.logf("fixed %d %-13s %-8s %6.1f req/s p50 %7.2f ms p99 %7.2f ms", round, w, s, rates[w], r.out.quantile(0.5), r.out.quantile(0.99))
					fixed = append(fixed, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Each strategy also at its own share of its own saturation: the
	// common rate above is set by the slowest strategy, which leaves the
	// fast ones few samples and an easy load. The share is of its lowest
	// round's: a machine shared with other work saturates later rounds
	// lower than the median, and a rate set from the median then queued
	// every strategy (the baseline too) into latencies of seconds, which
	// measured the machine's load, not the strategy.
	var own []run
	ownRates := map[string]float64{}
	for _, w := range h.cfg.Workloads {
		for _, s := range h.cfg.Strategies {
			lowest := math.Inf(1)
			for _, v := range values(saturated, s, w, outcome.throughput) {
				lowest = min(lowest, v)
			}
			if math.IsInf(lowest, 1) {
				lowest = 0
			}
			ownRates[s+"."+w] = max(lowest*h.cfg.RateShare, 1)
			h.set(s+"."+w+".own_rate_rps", ownRates[s+"."+w])
		}
	}
	err = h.phase("own_rate", func() error {
		for round := range h.cfg.Rounds {
			for _, w := range h.cfg.Workloads {
				for _, s := range h.cfg.Strategies {
					rate := ownRates[s+"."+w]
					r := run{s, w, round, do(s, w, everyone, round, rate, h.cfg.FixedDuration)}
					if err := check(r); err != nil {
						return err
					}
					h.logf("own %d %-13s %-8s %6.1f req/s p50 %7.2f ms p99 %7.2f ms", round, w, s, rate, r.out.quantile(0.5), r.out.quantile(0.99))
					own = append(own, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	hot, err := h.hotSet(deps, rates, check, do)
	if err != nil {
		return err
	}
	peak, samples := smp.Stop()
	smp = nil
	if d := deps[Database]; d != nil {
		h.set("database.peak_connections", float64(peak))
		h.set("database.connection_samples", float64(samples))
		h.set("database.connection_budget", float64(h.cfg.Budget))
		if st, ok := d.srv.perTenant(); ok {
			h.set("database.pool_high_water", float64(st.Stats().HighWater))
		}
	}
	h.summarize(saturated, fixed, own)
	h.summarizeHot(hot)
	h.recordCPU(cpu)
	return nil
}

// runsHotSet reports whether the run makes the hot-set runs (hotSet):
// with HotTenants, rls and database.
func (c Config) runsHotSet() bool {
	return c.HotTenants > 0 && slices.Contains(c.Strategies, RLS) && slices.Contains(c.Strategies, Database)
}

// sweepText describes the warm-up sweep of cfg.
func sweepText(cfg Config) string {
	if cfg.WarmupPasses == 0 {
		return "no warm-up sweep"
	}
	return fmt.Sprintf("a warm-up sweep (%d passes over every tenant of each read workload on each strategy, at saturation, each workload's at most %s)", cfg.WarmupPasses, cfg.WarmupLimit)
}

// hotSettings says how the hot-set runs were made.
func hotSettings(cfg Config) string {
	if !cfg.runsHotSet() {
		return "not run"
	}
	return fmt.Sprintf("the first %d tenants (the large ones first), rls and database in turn; per workload a %s warm-up and a %s run at saturation of each, then %d rounds of %s at %.0f%% of the lower of the two saturation throughputs (never below the common fixed rate)", cfg.HotTenants, cfg.Warmup, cfg.Duration, cfg.Rounds, cfg.FixedDuration, cfg.RateShare*100)
}

// hotStrategies are the strategies of the hot-set runs: the database
// strategy, and RLS as its reference.
var hotStrategies = []string{RLS, Database}

// hotSet runs each workload at a fixed rate on the database strategy and
// on RLS with only HotTenants tenants active, fewer than the database
// strategy's connection budget: the issue's "p99 ≤ 1.5× RLS while the
// active tenants fit the budget", which the runs over every tenant (1,000
// active for 50 connections) cannot show. A warm-up at saturation opens
// the hot tenants' connections first; a run at saturation of each then
// sets the rate, RateShare of the lower throughput (at least the common
// rate), so that every p99 rests on thousands of samples where the
// strategies allow; the database strategy's dials during the timed runs
// say whether the connections stayed open. do runs one
// workload on one strategy against a population, as measure's runs do.
// Without both strategies, or with HotTenants 0, it runs nothing.
func (h *harness) hotSet(deps map[string]*deployment, rates map[string]float64, check func(run) error,
	do func(s, w string, pop population, round int, rate float64, d time.Duration) outcome) ([]run, error) {
	if !h.cfg.runsHotSet() {
		return nil, nil
	}
	db, ok := deps[Database].srv.perTenant()
	if !ok {
		return nil, errors.New("hot set: the database deployment has no database strategy")
	}
	pop := h.data.hot(h.cfg.HotTenants)
	h.set("hot.tenants", float64(pop.size()))
	var hot []run
	hotRates := map[string]float64{}
	err := h.phase("hot_set", func() error {
		for _, w := range h.cfg.Workloads {
			for _, s := range hotStrategies {
				if h.cfg.Warmup > 0 {
					if err := check(run{s, w, -1, do(s, w, pop, 0, 0, h.cfg.Warmup)}); err != nil {
						return err
					}
				}
			}
			// The rate: a share of the lower saturation throughput of
			// the two over the hot tenants, never below the common rate.
			// The common rate is a share of the slowest strategy's
			// throughput over every tenant, far below what either serves
			// to a warm hot set, and gives the p99 few samples.
			lowest := math.Inf(1)
			for _, s := range hotStrategies {
				r := run{s, w, 0, do(s, w, pop, 0, 0, h.cfg.Duration)}
				if err := check(r); err != nil {
					return err
				}
				h.set(s+"."+w+".hot_throughput_rps", r.out.throughput())
				lowest = min(lowest, r.out.throughput())
			}
			hotRates[w] = max(rates[w], h.cfg.RateShare*lowest)
			h.set("hot."+w+".rate_rps", hotRates[w])
		}
		dials, requests := db.Stats().Dials, 0
		for round := range h.cfg.Rounds {
			for _, w := range h.cfg.Workloads {
				for _, s := range hotStrategies {
					before := db.Stats().Dials
					r := run{s, w, round, do(s, w, pop, round, hotRates[w], h.cfg.FixedDuration)}
					if err := check(r); err != nil {
						return err
					}
					h.logf("hot %d %-13s %-8s %6.1f req/s p50 %7.2f ms p99 %7.2f ms, %d dials", round, w, s, hotRates[w], r.out.quantile(0.5), r.out.quantile(0.99), db.Stats().Dials-before)
					hot = append(hot, r)
					if s == Database {
						requests += r.out.ok + r.out.failed
					}
				}
			}
		}
		h.set("database.hot_dials", float64(db.Stats().Dials-dials))
		h.set("database.hot_requests", float64(requests))
		return nil
	})
	return hot, err
}

// summarizeHot turns the hot-set runs into figures: per strategy and
// workload hot_p50_ms, hot_p99_ms and hot_p99_samples, and the database
// strategy's hot_p50_vs_rls and hot_p99_vs_rls with their spread.
func (h *harness) summarizeHot(hot []run) {
	if len(hot) == 0 {
		return
	}
	for _, w := range h.cfg.Workloads {
		for _, s := range hotStrategies {
			for _, q := range []float64{0.50, 0.99} {
				of := func(o outcome) float64 { return o.quantile(q) }
				name := fmt.Sprintf("hot_p%.0f", q*100)
				h.set(s+"."+w+"."+name+"_ms", median(values(hot, s, w, of)))
				if s == RLS {
					continue
				}
				if rs := ratios(hot, s, RLS, w, of); len(rs) > 0 {
					h.set(s+"."+w+"."+name+"_vs_rls", median(rs))
					h.set(s+"."+w+"."+name+"_vs_rls_min", slices.Min(rs))
					h.set(s+"."+w+"."+name+"_vs_rls_max", slices.Max(rs))
				}
			}
			if n := values(hot, s, w, func(o outcome) float64 { return float64(len(o.latencies)) }); len(n) > 0 {
				h.set(s+"."+w+".hot_p99_samples", slices.Min(n))
			}
			h.set(s+"."+w+".hot_errors", failures(hot, s, w))
		}
	}
}

// summarize turns the runs into figures: per strategy and workload the
// median over rounds of each measure and of its ratio to the baseline's in
// the same round (and, for schema and database, to RLS's).
func (h *harness) summarize(saturated, fixed, own []run) {
	measures := []struct {
		name string
		runs []run
		of   func(outcome) float64
	}{
		{"throughput_rps", saturated, outcome.throughput},
		{"p50_ms", fixed, func(o outcome) float64 { return o.quantile(0.50) }},
		{"p99_ms", fixed, func(o outcome) float64 { return o.quantile(0.99) }},
	}
	for _, w := range h.cfg.Workloads {
		for _, s := range h.cfg.Strategies {
			h.set(s+"."+w+".errors", failures(saturated, s, w)+failures(fixed, s, w))
			for _, m := range measures {
				key := s + "." + w + "." + m.name
				h.set(key, median(values(m.runs, s, w, m.of)))
				base := strings.TrimSuffix(strings.TrimSuffix(m.name, "_rps"), "_ms")
				for ref, ratioName := range references(s, base, h.cfg.Strategies) {
					rs := ratios(m.runs, s, ref, w, m.of)
					h.set(s+"."+w+"."+ratioName, median(rs))
					if len(rs) > 1 { // the spread over rounds: how far one round is to be trusted
						h.set(s+"."+w+"."+ratioName+"_min", slices.Min(rs))
						h.set(s+"."+w+"."+ratioName+"_max", slices.Max(rs))
					}
				}
			}
			// How many requests each p99 rests on: the fewest of any round.
			count := func(o outcome) float64 { return float64(len(o.latencies)) }
			if n := values(fixed, s, w, count); len(n) > 0 {
				h.set(s+"."+w+".p99_samples", slices.Min(n))
			}
			if n := values(own, s, w, count); len(n) > 0 {
				h.set(s+"."+w+".own_p99_samples", slices.Min(n))
				h.set(s+"."+w+".own_p50_ms", median(values(own, s, w, func(o outcome) float64 { return o.quantile(0.50) })))
				h.set(s+"."+w+".own_p99_ms", median(values(own, s, w, func(o outcome) float64 { return o.quantile(0.99) })))
				// How much of the rate was answered within the run: well
				// below 1, the run queued (the machine, or the strategy,
				// could not keep the rate) and its latencies are queueing.
				if rate, ok := h.get(s + "." + w + ".own_rate_rps"); ok && rate > 0 {
					sent := rate * h.cfg.FixedDuration.Seconds()
					h.set(s+"."+w+".own_answered_share", slices.Min(values(own, s, w, func(o outcome) float64 {
						return float64(o.ok+o.failed) / sent
					})))
				}
			}
			// Against the physical-limit anchors of the same rounds.
			for _, a := range anchored[w] {
				rs := ratios(saturated, s, a, w, outcome.throughput)
				if len(rs) == 0 {
					continue
				}
				h.set(s+"."+w+".throughput_vs_"+a, median(rs))
				h.set(s+"."+w+".throughput_vs_"+a+"_min", slices.Min(rs))
				h.set(s+"."+w+".throughput_vs_"+a+"_max", slices.Max(rs))
			}
		}
		for _, a := range anchored[w] {
			if v := values(saturated, a, w, outcome.throughput); len(v) > 0 {
				h.set(a+"."+w+".throughput_rps", median(v))
			}
		}
	}
}

// references returns what strategy s is compared with, round by round, and
// the name of each ratio of measure base: the baseline (<base>_ratio) and
// RLS (<base>_vs_rls) where they ran; a Citus deployment only with the
// same strategy on the plain cluster (<base>_vs_plain).
func references(s, base string, ran []string) map[string]string {
	refs := map[string]string{}
	if plain, ok := strings.CutPrefix(s, CitusPrefix); ok {
		if slices.Contains(ran, plain) {
			refs[plain] = base + "_vs_plain"
		}
		return refs
	}
	if s != Baseline && slices.Contains(ran, Baseline) {
		refs[Baseline] = base + "_ratio"
	}
	if s != RLS && s != Baseline && slices.Contains(ran, RLS) {
		refs[RLS] = base + "_vs_rls"
	}
	return refs
}

// values returns of(run) of the runs of strategy s on workload w.
func values(runs []run, s, w string, of func(outcome) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.strategy == s && r.workload == w {
			out = append(out, of(r.out))
		}
	}
	return out
}

// failures returns the failed requests of the runs of strategy s on
// workload w, in all.
func failures(runs []run, s, w string) float64 {
	n := 0.0
	for _, f := range values(runs, s, w, func(o outcome) float64 { return float64(o.failed) }) {
		n += f
	}
	return n
}

// ratios returns, round by round, of(s's run) / of(ref's run) on w.
func ratios(runs []run, s, ref, w string, of func(outcome) float64) []float64 {
	byRound := map[int]float64{}
	for _, r := range runs {
		if r.strategy == ref && r.workload == w {
			byRound[r.round] = of(r.out)
		}
	}
	var out []float64
	for _, r := range runs {
		if r.strategy == s && r.workload == w {
			if b, ok := byRound[r.round]; ok && b > 0 {
				out = append(out, of(r.out)/b)
			}
		}
	}
	return out
}

// median of xs, NaN when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}
