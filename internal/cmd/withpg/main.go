// Command withpg runs a command against a throwaway PostgreSQL cluster and,
// with -pgbouncer, a PgBouncer in front of it:
//
//	go run ./internal/cmd/withpg [-dir DIR] [-citus] [-pgbouncer] -- CMD ARGS...
//
// It starts the cluster in a fresh directory under DIR (by default tmp/ in
// the repository, or the system's temporary directory outside it), creates
// no database or role in it, and runs CMD with these set:
//
//	BULKHEAD_TEST_DATABASE_URL   superuser postgres, database postgres
//	BULKHEAD_TEST_PGBOUNCER_URL  the same through PgBouncer (-pgbouncer only)
//	BULKHEAD_TEST_PG_BINDIR      the PostgreSQL binaries
//	BULKHEAD_TEST_PG_DIR         the cluster's directory (data in data/)
//
// With -citus the cluster is a Citus coordinator and two workers
// (pgcluster.StartCitus; `make deps/citus` installs Citus): the database
// postgres of the coordinator has the citus extension and both workers
// registered, BULKHEAD_TEST_DATABASE_URL and PgBouncer lead to the
// coordinator, BULKHEAD_TEST_PG_DIR is the coordinator's directory, and
//
//	BULKHEAD_TEST_CITUS_WORKER_URLS  the workers' superuser DSNs, space-separated
//
// (they present the cluster's node certificate, as the workers require).
//
// When BULKHEAD_TEST_DATABASE_URL is already set, withpg starts nothing and
// runs CMD against that server. SIGINT and SIGTERM are passed on to CMD.
// Afterwards the servers are stopped and the directory removed, unless CMD
// failed: then it is kept, and its path printed, for inspection.
//
// Exit status: CMD's (128+n when CMD died of signal n), 2 for bad usage,
// 1 when the servers cannot be started.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

// The variables CMD gets.
const (
	envURL      = "BULKHEAD_TEST_DATABASE_URL"
	envBouncer  = "BULKHEAD_TEST_PGBOUNCER_URL"
	envBinDir   = "BULKHEAD_TEST_PG_BINDIR"
	envDir      = "BULKHEAD_TEST_PG_DIR"
	envWorkers  = "BULKHEAD_TEST_CITUS_WORKER_URLS"
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("withpg", flag.ContinueOnError)
	parent := fs.String("dir", "", "create the throwaway cluster's directory under `DIR` (default: tmp/ in the repository)")
	bouncer := fs.Bool("pgbouncer", false, "also start PgBouncer (transaction pooling) and set "+envBouncer)
	citus := fs.Bool("citus", false, "start a Citus coordinator and two workers instead of one server, and set "+envWorkers)
	poolSize := fs.Int("pool-size", 20, "PgBouncer's default_pool_size")
	keep := fs.Bool("keep", false, "keep the directory even when CMD succeeds")
	verbose := fs.Bool("v", false, "log what the servers do")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: withpg [-dir DIR] [-citus] [-pgbouncer] [-pool-size N] [-keep] [-v] -- CMD ARGS...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}

	// Registered for the whole run: a signal never kills withpg before it
	// has stopped the servers.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if url := os.Getenv(envURL); url != "" {
		fmt.Fprintf(os.Stderr, "withpg: %s is set; running against that server, starting none\n", envURL)
		return runCmd(fs.Args(), os.Environ(), sigs)
	}

	logf := func(string, ...any) {}
	if *verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "withpg: "+format+"\n", args...) }
	}
	s := &servers{citus: *citus, bouncer: *bouncer, poolSize: *poolSize, logf: logf}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	started := make(chan error, 1)
	go func() { started <- s.start(ctx, *parent) }()
	var err error
	select {
	case err = <-started:
	case sig := <-sigs:
		cancel()
		<-started
		s.stop()
		s.cleanup(true)
		return 128 + int(sig.(syscall.Signal))
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		s.stop()
		s.cleanup(!s.hasLogs())
		return exitFailure
	}

	env := withoutVars(os.Environ(), envURL, envBouncer, envBinDir, envDir, envWorkers)
	env = append(env,
		envURL+"="+s.cluster.URL("postgres", "postgres"),
		envBinDir+"="+s.cluster.BinDir(),
		envDir+"="+s.cluster.Dir(),
	)
	summary := fmt.Sprintf("withpg: PostgreSQL on 127.0.0.1:%d", s.cluster.Port())
	if s.citusCluster != nil {
		var urls, ports []string
		for _, w := range s.citusCluster.Workers {
			urls = append(urls, w.URL("postgres", "postgres"))
			ports = append(ports, strconv.Itoa(w.Port()))
		}
		env = append(env, envWorkers+"="+strings.Join(urls, " "))
		summary = fmt.Sprintf("withpg: Citus coordinator on 127.0.0.1:%d, workers on %s, up after %s",
			s.cluster.Port(), strings.Join(ports, " and "), s.took.Round(time.Millisecond))
	}
	if s.pgbouncer != nil {
		env = append(env, envBouncer+"="+s.pgbouncer.URL("postgres", "postgres"))
		summary += fmt.Sprintf(", PgBouncer on 127.0.0.1:%d", s.pgbouncer.Port())
	}
	fmt.Fprintf(os.Stderr, "%s (in %s)\n", summary, s.dir)

	code := runCmd(fs.Args(), env, sigs)
	clean := s.stop()
	s.cleanup(code == 0 && clean && !*keep)
	return code
}

// servers are the cluster and PgBouncer withpg runs, and their directory.
type servers struct {
	citus    bool
	bouncer  bool
	poolSize int
	logf     func(string, ...any)

	dir          string             // the fresh directory holding both
	cluster      *pgcluster.Cluster // the server, or the Citus coordinator
	citusCluster *pgcluster.Citus   // -citus only
	pgbouncer    *pgcluster.PgBouncer
	took         time.Duration // to start the servers
}

func (s *servers) start(ctx context.Context, parent string) error {
	err := s.startIn(ctx, parent)
	if parent == "" && errors.Is(err, pgcluster.ErrDirNotReachable) {
		// The repository sits where the server user cannot go (under
		// /root, say): fall back to the system's temporary directory.
		fmt.Fprintf(os.Stderr, "withpg: %v\nwithpg: using %s instead\n", err, os.TempDir())
		s.stop()
		s.cleanup(true)
		err = s.startIn(ctx, os.TempDir())
	}
	return err
}

func (s *servers) startIn(ctx context.Context, parent string) error {
	if parent == "" {
		parent = os.TempDir()
		if root := repoRoot(); root != "" {
			parent = filepath.Join(root, "tmp")
		}
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(parent, "withpg-")
	if err != nil {
		return err
	}
	s.dir = dir
	// MkdirTemp makes it private; the server user must be able to enter.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	begin := time.Now()
	if s.citus {
		s.citusCluster, err = pgcluster.StartCitus(ctx, pgcluster.CitusOptions{
			Dir: filepath.Join(dir, "citus"),
			// Every test database holds its own shards; fewer of them
			// make cloning and migrating test databases faster.
			Settings: map[string]string{"citus.shard_count": "8"},
			Logf:     s.logf,
		})
		if err != nil {
			return err
		}
		s.cluster = s.citusCluster.Coordinator
	} else if s.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Logf: s.logf}); err != nil {
		return err
	}
	s.took = time.Since(begin)
	if !s.bouncer {
		return nil
	}
	s.pgbouncer, err = pgcluster.StartPgBouncer(ctx, pgcluster.PgBouncerOptions{
		Dir:             filepath.Join(dir, "pgbouncer"),
		ServerPort:      s.cluster.Port(),
		DefaultPoolSize: s.poolSize,
		Logf:            s.logf,
	})
	return err
}

// stop stops whatever runs and reports whether everything stopped cleanly.
func (s *servers) stop() bool {
	clean := true
	if s.pgbouncer != nil {
		if err := s.pgbouncer.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
			clean = false
		}
		s.pgbouncer = nil
	}
	if s.citusCluster != nil {
		if err := s.citusCluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
			clean = false
		}
		s.citusCluster, s.cluster = nil, nil
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
			clean = false
		}
		s.cluster = nil
	}
	return clean
}

// hasLogs reports whether a server got as far as writing a log.
func (s *servers) hasLogs() bool {
	for _, log := range []string{"pg/postgres.log", "citus/coordinator/postgres.log", "pgbouncer/pgbouncer.log"} {
		if _, err := os.Stat(filepath.Join(s.dir, log)); err == nil {
			return true
		}
	}
	return false
}

// cleanup removes the directory, or keeps it and says where it is.
func (s *servers) cleanup(remove bool) {
	if s.dir == "" {
		return
	}
	dir := s.dir
	s.dir = ""
	if remove {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "withpg: kept %s for inspection (logs: pg/postgres.log or citus/*/postgres.log, pgbouncer/pgbouncer.log)\n", dir)
}

// runCmd runs args with env and inherited stdio, passing sigs on to it, and
// returns its exit status.
func runCmd(args, env []string, sigs <-chan os.Signal) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 127
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			return exitStatus(err)
		}
	}
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return exitFailure
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return exit.ExitCode()
}

func withoutVars(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if name == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// repoRoot returns the directory of the Bulkhead module that holds the
// working directory, or "" when there is none.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isBulkhead(filepath.Join(dir, "go.mod")) {
			return dir
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

func isBulkhead(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == "github.com/bulkheadhq/bulkhead"
		}
	}
	return false
}
