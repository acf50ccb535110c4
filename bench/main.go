// Command bench measures what tenant isolation costs, strategy by strategy,
// against a baseline without tenancy in the database, and writes
// latest.json, latest.md and latest.svg into -out:
//
//	go run ./bench -out bench/results
//
// It starts its own throwaway PostgreSQL (see internal/pgcluster), so it
// needs the PostgreSQL binaries and nothing running. With -citus it also
// starts a Citus coordinator and workers (`make deps/citus` builds Citus),
// runs rls and schema on both, and writes citus-latest.json and
// citus-latest.md instead (`make bench/citus`). Flags shrink the run;
// bench/README.md says what the figures mean.
//
// Exit status: 0 when the results are written (a missed target is reported,
// not a failure), 1 when the run fails, 2 for bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/bulkheadhq/bulkhead/bench/harness"
	"github.com/bulkheadhq/bulkhead/bench/report"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// run parses args, runs the harness and writes its results; it returns the
// exit status.
func run(args []string, stderr io.Writer) int {
	cfg := harness.Defaults()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench/results", "write latest.{json,md,svg} into `DIR`")
	fs.IntVar(&cfg.Tenants, "tenants", cfg.Tenants, "tenants per strategy")
	fs.IntVar(&cfg.Large, "large", cfg.Large, "how many of them are large")
	fs.IntVar(&cfg.LargeRows, "large-rows", cfg.LargeRows, "cost items of each large tenant")
	fs.IntVar(&cfg.SmallRows, "small-rows", cfg.SmallRows, "mean cost items of the other tenants")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds of runs; medians are reported")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each saturation run")
	fs.DurationVar(&cfg.FixedDuration, "fixed-duration", cfg.FixedDuration, "length of each fixed-rate run")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "length of the warm-up run of each workload and strategy")
	fs.IntVar(&cfg.WarmupPasses, "warmup-passes", cfg.WarmupPasses, "passes of the warm-up sweep over every tenant, per read workload and strategy (0: none)")
	fs.DurationVar(&cfg.WarmupLimit, "warmup-limit", cfg.WarmupLimit, "longest warm-up sweep of one workload on one strategy")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent clients at saturation")
	fs.Float64Var(&cfg.RateShare, "rate-share", cfg.RateShare, "fixed rate as a share of the lowest saturation throughput")
	fs.IntVar(&cfg.Budget, "budget", cfg.Budget, "database strategy connection budget (isolation.database.max_connections)")
	fs.IntVar(&cfg.HotTenants, "hot-tenants", cfg.HotTenants, "active tenants of the hot-set runs of the database strategy and RLS, at most the budget (0: none)")
	fs.IntVar(&cfg.AppConns, "app-conns", cfg.AppConns, "serving pool size (database.max_connections)")
	fs.IntVar(&cfg.MigrateParallelism, "migrate-parallelism", cfg.MigrateParallelism, "isolation.migrate_parallelism")
	fs.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "the harness's own parallelism when provisioning and loading")
	fs.IntVar(&cfg.ProvisionSample, "provision-sample", cfg.ProvisionSample, "tenants provisioned one at a time, each timed")
	fs.IntVar(&cfg.FocusRows, "focus-rows", cfg.FocusRows, "rows of the FOCUS billing export loaded into each strategy (0: none)")
	fs.BoolVar(&cfg.Settle, "settle", cfg.Settle, "before timing migrations, wait out the minutes after mass file deletion in which ext4 without a journal makes creating files slow (only on such a file system)")
	strategies := fs.String("strategies", strings.Join(cfg.Strategies, ","), "strategies to run (baseline needs rls)")
	workloads := fs.String("workloads", strings.Join(cfg.Workloads, ","), "workloads to run")
	fs.StringVar(&cfg.Dir, "dir", "", "put the cluster under `DIR` (default: a temporary directory)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the cluster's directory")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the data set and the request sequences")
	fs.BoolVar(&cfg.Noisy, "noisy", cfg.Noisy, "run the noisy-neighbour workload")
	fs.DurationVar(&cfg.NoisyDuration, "noisy-duration", cfg.NoisyDuration, "length of each noisy-neighbour run")
	fs.Float64Var(&cfg.NoisyRate, "noisy-rate", cfg.NoisyRate, "the victim's point reads per second")
	fs.IntVar(&cfg.NoisyIdleConns, "noisy-idle", cfg.NoisyIdleConns, "idle connections of the idle-and-flood attack (fewer if the file limit says so)")
	fs.BoolVar(&cfg.Citus, "citus", false, "run rls and schema on plain PostgreSQL and on a Citus coordinator with -citus-workers workers, and write citus-latest.{json,md} (no baseline, database strategy, noisy neighbour or FOCUS export)")
	fs.IntVar(&cfg.CitusWorkers, "citus-workers", cfg.CitusWorkers, "Citus workers, with -citus")
	quiet := fs.Bool("q", false, "print no progress")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (the servers run in this process) to `FILE`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Strategies, cfg.Workloads = split(*strategies), split(*workloads)
	if cfg.Citus {
		// What a Citus run leaves out, unless asked for (and then
		// refused by Validate).
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["strategies"] {
			cfg.Strategies = harness.CitusStrategies
		}
		if !set["noisy"] {
			cfg.Noisy = false
		}
		if !set["focus-rows"] {
			cfg.FocusRows = 0
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "bench: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	begin := time.Now()
	if !*quiet {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(stderr, "bench %6.1fs: %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, args...))
		}
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := harness.Run(ctx, cfg)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "bench: interrupted")
		} else {
			fmt.Fprintf(stderr, "bench: %v\n", err)
		}
		return 1
	}
	write, files := report.Write, "latest.{json,md,svg}"
	if cfg.Citus {
		write, files = report.WriteCitus, "citus-latest.{json,md}"
	}
	if err := write(*out, res); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "bench: wrote %s/%s in %s\n", *out, files, time.Since(begin).Round(time.Second))
	return 0
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
