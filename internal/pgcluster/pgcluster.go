// Package pgcluster runs throwaway PostgreSQL clusters, and PgBouncer in
// front of them, from the locally installed binaries: for tests, which
// reach a real server, and for the development server.
//
// initdb and postgres refuse to run as root, so when the calling process is
// root the servers run as the postgres system user, which then owns the
// cluster's directory. On Linux, a server whose parent process dies without
// stopping it shuts itself down.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotInstalled is wrapped by errors reporting that the PostgreSQL or
// PgBouncer binaries cannot be found.
var ErrNotInstalled = errors.New("not installed")

// ErrDirNotReachable is wrapped by Start and StartPgBouncer errors when the
// system user the server runs as cannot reach the directory it was given.
var ErrDirNotReachable = errors.New("directory not reachable by the server user")

// errPortInUse marks a server that could not bind its port.
var errPortInUse = errors.New("port in use")

const host = "127.0.0.1"

// FindBin returns the directory holding the PostgreSQL server binaries
// (initdb, postgres): $PG_BINDIR when set, else `pg_config --bindir`, else
// the newest /usr/lib/postgresql/*/bin, else the directory of postgres in
// PATH. The error wraps ErrNotInstalled and says how to install them. It is
// safe for concurrent use.
func FindBin() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		if err := checkBin(d); err != nil {
			return "", fmt.Errorf("pgcluster: PG_BINDIR=%s: %w", d, err)
		}
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); checkBin(d) == nil {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		switch va, vb := version(a), version(b); {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	for _, d := range dirs {
		if checkBin(d) == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if d := filepath.Dir(p); checkBin(d) == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("pgcluster: PostgreSQL server binaries (initdb, postgres) %w: run scripts/install-deps.sh, or set PG_BINDIR to the directory holding them", ErrNotInstalled)
}

func checkBin(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("no %s in %s: %w", name, dir, ErrNotInstalled)
		}
	}
	return nil
}

// Options configures Start.
type Options struct {
	// Dir holds the cluster: its data directory is Dir/data, its unix
	// socket and log (postgres.log) are in Dir. It is created if missing.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Settings are postgresql.conf settings on top of the defaults
	// (throwaway speed: fsync, synchronous_commit and full_page_writes
	// off; max_connections 600; shared_buffers 256MB), which they
	// override. port, listen_addresses and unix_socket_directories are
	// managed by Start and may not be set.
	Settings map[string]string
	// Persistent reuses a cluster already in Dir/data instead of
	// requiring a fresh one; it initializes one when there is none.
	Persistent bool
	// AvoidEphemeralPorts picks the port (when Port is 0) outside the
	// range the kernel hands out for outgoing connections: a node of a
	// cluster whose members open many connections to each other could
	// otherwise find its port taken by one of them before it binds.
	AvoidEphemeralPorts bool
	// ClientTLS, when set, is the certificate URL's DSNs present, for a
	// server whose pg_hba.conf admits TCP clients only with one.
	ClientTLS *ClientTLS
	// HBA, when set, is the content of pg_hba.conf, written in place of
	// initdb's (trust for everyone) before the server starts: to measure
	// or test an authentication method. It must let the role postgres in
	// over TCP on 127.0.0.1 without a password: Start and URL rely on it.
	HBA string
	// TLS makes the server offer TLS, with a certificate of a throwaway
	// authority written into Dir/tls; URL's DSNs then present a client
	// certificate of the same authority (as with ClientTLS, which it
	// replaces).
	TLS bool
	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// Cluster is a PostgreSQL server that Start started. Trust authentication
// lets any role in without a password, over TCP on 127.0.0.1 and the unix
// socket. Its methods are safe for concurrent use.
type Cluster struct {
	bin       string
	dir       string
	data      string
	logPath   string
	socket    string // unix_socket_directories; empty: no socket
	settings  []string
	acct      *account
	logf      func(string, ...any)
	clientTLS *ClientTLS

	port int // fixed once Start returns

	mu     sync.Mutex
	proc   *proc // nil when stopped
	logOff int64 // where the running server's log output starts
}

// Start starts a PostgreSQL cluster in opts.Dir, running initdb first
// unless opts.Persistent and a cluster is already there, and returns once
// it accepts connections or ctx ends. Without Persistent, an existing
// cluster in opts.Dir is an error, not reused. Errors wrap ErrNotInstalled
// or ErrDirNotReachable where those are the cause, and otherwise include
// the end of the server's log. The caller must Stop the cluster.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is empty")
	}
	settings, err := serverSettings(opts.Settings)
	if err != nil {
		return nil, err
	}
	bin, err := FindBin()
	if err != nil {
		return nil, err
	}
	dir, acct, logf, err := workDir(opts.Dir, opts.Logf)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		bin:       bin,
		dir:       dir,
		data:      filepath.Join(dir, "data"),
		logPath:   filepath.Join(dir, "postgres.log"),
		socket:    dir,
		settings:  settings,
		acct:      acct,
		logf:      logf,
		clientTLS: opts.ClientTLS,
	}
	if opts.TLS {
		tlsDir, _, _, err := workDir(filepath.Join(dir, "tls"), logf)
		if err != nil {
			return nil, err
		}
		if c.clientTLS, err = writeNodeTLS(tlsDir, acct); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		c.settings = append(c.settings, "-c", "ssl=on", "-c", "ssl_ca_file="+c.clientTLS.CAFile,
			"-c", "ssl_cert_file="+c.clientTLS.CertFile, "-c", "ssl_key_file="+c.clientTLS.KeyFile)
	}
	// sun_path holds 108 bytes, NUL included.
	if len(filepath.Join(dir, ".s.PGSQL.65535")) > 107 {
		logf("pgcluster: %s is too long a path for a unix socket; TCP only", dir)
		c.socket = ""
	}

	if _, err := os.Stat(filepath.Join(c.data, "PG_VERSION")); err == nil {
		if !opts.Persistent {
			return nil, fmt.Errorf("pgcluster: %s already holds a cluster: remove it, or set Persistent to reuse it", c.data)
		}
		if err := chownTree(c.data, acct); err != nil {
			return nil, fmt.Errorf("pgcluster: hand %s to %s: %w", c.data, acct.name, err)
		}
		logf("pgcluster: reusing the cluster in %s", c.data)
	} else if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	if opts.HBA != "" {
		if err := writeOwned(filepath.Join(c.data, "pg_hba.conf"), opts.HBA, acct); err != nil {
			return nil, fmt.Errorf("pgcluster: write pg_hba.conf: %w", err)
		}
	}

	for attempt := 1; ; attempt++ {
		c.port = opts.Port
		if c.port == 0 {
			pick := freePort
			if opts.AvoidEphemeralPorts {
				pick = portOutsideEphemeral
			}
			if c.port, err = pick(); err != nil {
				return nil, fmt.Errorf("pgcluster: %w", err)
			}
		}
		c.mu.Lock()
		err = c.start(ctx)
		c.mu.Unlock()
		if err == nil {
			return c, nil
		}
		// Another process took the free port between picking and binding.
		if opts.Port == 0 && errors.Is(err, errPortInUse) && attempt < 5 {
			logf("pgcluster: port %d taken meanwhile; trying another", c.port)
			continue
		}
		return nil, err
	}
}

// serverSettings returns the postgres command-line settings: the defaults
// with extra on top, in a stable order.
func serverSettings(extra map[string]string) ([]string, error) {
	all := map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "600",
		"shared_buffers":     "256MB",
	}
	for k, v := range extra {
		switch k {
		case "port", "listen_addresses", "unix_socket_directories":
			return nil, fmt.Errorf("pgcluster: setting %s is managed by Start", k)
		}
		all[k] = v
	}
	var args []string
	for _, k := range slices.Sorted(maps.Keys(all)) {
		args = append(args, "-c", k+"="+all[k])
	}
	return args, nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	start := time.Now()
	args := []string{"-D", c.data, "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-sync"}
	out, err := c.run(ctx, "initdb", append(args, "--locale=C.UTF-8")...)
	if err != nil && strings.Contains(out, "locale") {
		c.logf("pgcluster: no C.UTF-8 locale here; initdb --no-locale")
		out, err = c.run(ctx, "initdb", append(args, "--no-locale")...)
	}
	if err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w\n%s", c.data, err, out)
	}
	c.logf("pgcluster: initdb %s took %s", c.data, time.Since(start).Round(time.Millisecond))
	return nil
}

// run runs one of the PostgreSQL programs as the server user and returns
// its combined output.
func (c *Cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.acct.cred}
	cmd.Dir = c.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// start starts postgres and waits for it to accept connections; c.mu is
// held.
func (c *Cluster) start(ctx context.Context) error {
	begin := time.Now()
	log, off, err := createLog(c.logPath, c.acct)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	args := []string{
		"-D", c.data,
		"-c", "port=" + strconv.Itoa(c.port),
		"-c", "listen_addresses=" + host,
		"-c", "unix_socket_directories=" + quoteDir(c.socket),
	}
	// Fast shutdown if the caller dies without stopping the server.
	p, err := startProc(c.acct, log, syscall.SIGINT, filepath.Join(c.bin, "postgres"), append(args, c.settings...)...)
	log.Close()
	if err != nil {
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	if err := waitReady(ctx, p, c.URL("postgres", "postgres")); err != nil {
		p.stop(stopStep{syscall.SIGQUIT, 10 * time.Second})
		tail := logTail(c.logPath, off)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("pgcluster: start postgres on port %d: %w%s", c.port, err, tail)
	}
	c.proc, c.logOff = p, off
	c.logf("pgcluster: postgres up on %s:%d after %s (dir %s)", host, c.port, time.Since(begin).Round(time.Millisecond), c.dir)
	return nil
}

// quoteDir quotes a directory for a list-valued setting such as
// unix_socket_directories, whose entries may hold commas and spaces.
func quoteDir(dir string) string {
	if dir == "" {
		return ""
	}
	return `"` + strings.ReplaceAll(dir, `"`, `""`) + `"`
}

// waitReady polls dsn until a connection succeeds, p exits or ctx ends.
func waitReady(ctx context.Context, p *proc, dsn string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.exited() {
			return fmt.Errorf("exited during start-up (%v)", p.err)
		}
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.ConnectConfig(attempt, cfg)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last attempt: %v)", ctx.Err(), err)
		case <-p.done:
		case <-tick.C:
		}
	}
}

var (
	fastStop      = []stopStep{{syscall.SIGINT, time.Minute}, {syscall.SIGQUIT, 10 * time.Second}}
	immediateStop = []stopStep{{syscall.SIGQUIT, 10 * time.Second}}
)

// Stop shuts the server down the way `pg_ctl stop -m fast` does (open
// sessions are ended, a checkpoint is written) and waits for it to exit,
// keeping the data. It is idempotent, and StartAgain starts the server
// again. The error reports a server that had exited on its own with a
// failure, or that had to be killed.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop(fastStop)
}

// StopImmediate stops the server the way a crash would (`pg_ctl stop -m
// immediate`: sessions are cut, no checkpoint, recovery runs at the next
// start). Otherwise it behaves as Stop.
func (c *Cluster) StopImmediate() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop(immediateStop)
}

func (c *Cluster) stop(steps []stopStep) error {
	p := c.proc
	if p == nil {
		return nil
	}
	c.proc = nil
	wasRunning := !p.exited()
	err := p.stop(steps...)
	if err == nil {
		c.logf("pgcluster: postgres on port %d stopped", c.port)
		return nil
	}
	tail := logTail(c.logPath, c.logOff)
	if !wasRunning {
		return fmt.Errorf("pgcluster: postgres on port %d had exited: %w%s", c.port, err, tail)
	}
	return fmt.Errorf("pgcluster: stop postgres on port %d: %w%s", c.port, err, tail)
}

// StartAgain starts a stopped server again on the same port and data, and
// returns once it accepts connections or ctx ends. It does nothing when the
// server runs. It fails if the port has been taken meanwhile.
func (c *Cluster) StartAgain(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		if !c.proc.exited() {
			return nil
		}
		c.proc = nil
	}
	return c.start(ctx)
}

// Restart stops the server as Stop does and starts it again as StartAgain
// does.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stop(fastStop); err != nil {
		return err
	}
	return c.start(ctx)
}

// Running reports whether the server process is alive.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc != nil && !c.proc.exited()
}

// Port returns the server's TCP port on Host.
func (c *Cluster) Port() int { return c.port }

// Host returns the address the server listens on: 127.0.0.1.
func (c *Cluster) Host() string { return host }

// Dir returns the cluster's directory (absolute): the data directory is
// Dir()/data; the unix socket and postgres.log are in Dir().
func (c *Cluster) Dir() string { return c.dir }

// BinDir returns the directory of the PostgreSQL binaries the cluster runs.
func (c *Cluster) BinDir() string { return c.bin }

// URL returns a DSN for user on database over TCP, without TLS:
// postgres://user@127.0.0.1:port/database?sslmode=disable; or, when the
// cluster was started with Options.ClientTLS, over TLS presenting that
// certificate and verifying the server's against its authority.
func (c *Cluster) URL(user, database string) string {
	if c.clientTLS != nil {
		return c.clientTLS.dsn(c.port, user, database)
	}
	return dsn(c.port, user, database)
}

func dsn(port int, user, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}
