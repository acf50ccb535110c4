package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// CitusDatabase is the database of every node in which StartCitus creates
// the citus extension and, on the coordinator, registers the workers.
const CitusDatabase = "postgres"

// FindCitus returns nil when the PostgreSQL that FindBin finds has the
// Citus extension installed, else an error wrapping ErrNotInstalled that
// says how to install it.
func FindCitus() error {
	bin, err := FindBin()
	if err != nil {
		return err
	}
	libdir := filepath.Join(filepath.Dir(bin), "lib")
	if out, err := exec.Command(filepath.Join(bin, "pg_config"), "--pkglibdir").Output(); err == nil {
		libdir = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(libdir, "citus.so")); err != nil {
		return fmt.Errorf("pgcluster: Citus %w in %s: run `make deps/citus` (scripts/install-citus.sh builds it from the vendored source)", ErrNotInstalled, libdir)
	}
	return nil
}

// CitusOptions configures StartCitus.
type CitusOptions struct {
	// Dir holds the nodes (coordinator/, worker1/, …) and the cluster's
	// certificates and pg_hba.conf files (tls/). It is created if missing.
	Dir string
	// Workers is the number of workers; 0 means 2.
	Workers int
	// Settings are postgresql.conf settings for every node, on top of
	// those StartCitus sets, which they override.
	Settings map[string]string
	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// Citus is a Citus cluster that StartCitus started: a coordinator and its
// workers, each a Cluster on 127.0.0.1. Its methods are safe for
// concurrent use.
//
// Worker authentication admits only the cluster's own nodes. Every node
// holds one certificate signed by a throwaway authority of the cluster's
// own, and Citus presents it on every connection between nodes
// (citus.node_conninfo); a worker's pg_hba.conf admits TCP connections
// only over TLS with a certificate from that authority
// (clientcert=verify-ca), plus its own unix socket, which only the server's
// operating-system user can reach. So a role that must be able to log in
// on the workers, because Citus connects as the current role (the owner
// running DDL, a tenant role after SET ROLE), can be reached there only
// through the coordinator. The coordinator admits clients like any
// Cluster (trust on 127.0.0.1): it is the test server.
type Citus struct {
	// Coordinator is the node clients connect to.
	Coordinator *Cluster
	// Workers hold the shards. Their URL methods present the node
	// certificate, which their pg_hba.conf requires.
	Workers []*Cluster
}

// StartCitus starts a coordinator and opts.Workers workers with the citus
// extension preloaded, creates the extension in the CitusDatabase of every
// node, and registers the coordinator and the workers there, returning
// once that is done or ctx ends. Ports lie outside the kernel's range for
// outgoing connections. Errors wrap ErrNotInstalled (PostgreSQL or Citus
// missing) or ErrDirNotReachable where those are the cause. The caller must
// Stop the cluster, also after an error (Stop of a nil *Citus does
// nothing).
func StartCitus(ctx context.Context, opts CitusOptions) (*Citus, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: CitusOptions.Dir is empty")
	}
	if err := FindCitus(); err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers == 0 {
		workers = 2
	}
	begin := time.Now()
	tlsDir, acct, logf, err := workDir(filepath.Join(opts.Dir, "tls"), opts.Logf)
	if err != nil {
		return nil, err
	}
	tls, err := writeNodeTLS(tlsDir, acct)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	hba := map[string]string{
		"coordinator": "# Clients: trust, as on any throwaway cluster.\n" +
			"local all all trust\n" +
			"host  all all 127.0.0.1/32 trust\n",
		"worker": "# Only the cluster's nodes: their certificate, or the server user's socket.\n" +
			"local   all all trust\n" +
			"hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
	}
	for name, content := range hba {
		if err := writeOwned(filepath.Join(tlsDir, "pg_hba_"+name+".conf"), content, acct); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	settings := func(kind string) map[string]string {
		s := map[string]string{
			"shared_preload_libraries": "citus",
			"ssl":                      "on",
			"ssl_ca_file":              tls.CAFile,
			"ssl_cert_file":            tls.CertFile,
			"ssl_key_file":             tls.KeyFile,
			"hba_file":                 filepath.Join(tlsDir, "pg_hba_"+kind+".conf"),
			"citus.node_conninfo":      tls.conninfo(),
			// Citus connects to its own node by this name; the
			// default, localhost, may resolve to ::1, where nothing
			// listens.
			"citus.local_hostname": host,
			// One maintenance daemon per database with the extension.
			"max_worker_processes": "128",
			// Multi-shard writes commit in two phases.
			"max_prepared_transactions": "200",
			// Shard moves copy by logical replication.
			"wal_level": "logical",
		}
		maps.Copy(s, opts.Settings)
		return s
	}

	c := &Citus{Workers: make([]*Cluster, workers)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		c.Coordinator, err = startNode(gctx, filepath.Join(opts.Dir, "coordinator"), settings("coordinator"), nil, opts.Logf)
		return err
	})
	for i := range c.Workers {
		g.Go(func() error {
			var err error
			c.Workers[i], err = startNode(gctx, filepath.Join(opts.Dir, "worker"+strconv.Itoa(i+1)), settings("worker"), tls, opts.Logf)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return c, err
	}
	if err := c.setup(ctx); err != nil {
		return c, fmt.Errorf("pgcluster: set up Citus: %w", err)
	}
	logf("pgcluster: Citus coordinator on %s:%d with %d workers up after %s", host, c.Coordinator.Port(), workers, time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// startNode starts one node on a port outside the ephemeral range.
func startNode(ctx context.Context, dir string, settings map[string]string, tls *ClientTLS, logf func(string, ...any)) (*Cluster, error) {
	return Start(ctx, Options{
		Dir:                 dir,
		Settings:            settings,
		AvoidEphemeralPorts: true,
		ClientTLS:           tls,
		Logf:                logf,
	})
}

// setup creates the extension on every node and registers the nodes on
// the coordinator, which syncs the metadata to the workers.
func (c *Citus) setup(ctx context.Context) error {
	for _, n := range append([]*Cluster{c.Coordinator}, c.Workers...) {
		if err := execOn(ctx, n.URL("postgres", CitusDatabase), `CREATE EXTENSION IF NOT EXISTS citus`); err != nil {
			return fmt.Errorf("node on port %d: %w", n.Port(), err)
		}
	}
	stmts := []string{fmt.Sprintf(`SELECT citus_set_coordinator_host('%s', %d)`, host, c.Coordinator.Port())}
	for _, w := range c.Workers {
		stmts = append(stmts, fmt.Sprintf(`SELECT citus_add_node('%s', %d)`, host, w.Port()))
	}
	return execOn(ctx, c.Coordinator.URL("postgres", CitusDatabase), stmts...)
}

func execOn(ctx context.Context, dsn string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// URL returns a DSN for user on database of the coordinator, as
// Cluster.URL does.
func (c *Citus) URL(user, database string) string { return c.Coordinator.URL(user, database) }

// Stop stops the coordinator, then the workers, as Cluster.Stop does, and
// returns every error. It is idempotent; a nil c or nodes that never
// started are skipped.
func (c *Citus) Stop() error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.Coordinator != nil {
		errs = append(errs, c.Coordinator.Stop())
	}
	for _, w := range c.Workers {
		if w != nil {
			errs = append(errs, w.Stop())
		}
	}
	return errors.Join(errs...)
}
