package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PgBouncerOptions configures StartPgBouncer.
type PgBouncerOptions struct {
	// Dir holds the configuration, the log (pgbouncer.log) and the unix
	// socket. It is created if missing.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// ServerPort is the port of the PostgreSQL server on 127.0.0.1 that
	// every database is routed to. It must trust local connections and
	// have the superuser postgres, as a Cluster does.
	ServerPort int
	// DefaultPoolSize is the number of server connections per database
	// and user; 0 means 20.
	DefaultPoolSize int
	// Settings are [pgbouncer] settings on top of those StartPgBouncer
	// writes, which they override; listen_port is Port's.
	Settings map[string]string
	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// PgBouncer is a PgBouncer that StartPgBouncer started, pooling in
// transaction mode, as production deployments in front of many tenants
// do. Its methods are safe for concurrent use.
type PgBouncer struct {
	dir     string
	logPath string
	port    int
	logf    func(string, ...any)

	mu     sync.Mutex
	proc   *proc
	logOff int64
}

// FindPgBouncer returns the path of the pgbouncer binary: in PATH, else in
// /usr/sbin or /usr/local/sbin. The error wraps ErrNotInstalled and says how
// to install it.
func FindPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("pgcluster: pgbouncer %w: run scripts/install-deps.sh", ErrNotInstalled)
}

// StartPgBouncer starts PgBouncer in front of the server on
// opts.ServerPort and returns once it accepts connections or ctx ends.
//
// Every database name is routed to the server (a `*` entry), in
// transaction pool mode. Clients log in as any role the server has,
// without a password (auth_type trust; the role is looked up on the
// server through auth_query, so roles created later work too). Startup
// parameters PgBouncer 1.18 does not track make it refuse the connection,
// except extra_float_digits, which is ignored; pgx sends none unless the
// DSN asks for them. search_path in particular is refused rather than
// silently dropped. Errors wrap ErrNotInstalled or ErrDirNotReachable
// where those are the cause, and otherwise include the end of PgBouncer's
// log. The caller must Stop it.
func StartPgBouncer(ctx context.Context, opts PgBouncerOptions) (*PgBouncer, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: PgBouncerOptions.Dir is empty")
	}
	if opts.ServerPort == 0 {
		return nil, errors.New("pgcluster: PgBouncerOptions.ServerPort is 0")
	}
	bin, err := FindPgBouncer()
	if err != nil {
		return nil, err
	}
	dir, acct, logf, err := workDir(opts.Dir, opts.Logf)
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{dir: dir, logPath: filepath.Join(dir, "pgbouncer.log"), logf: logf}
	authFile := filepath.Join(dir, "userlist.txt")
	// The auth_user must be listed; with trust, its password is not used.
	if err := writeOwned(authFile, `"postgres" ""`+"\n", acct); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	pool := opts.DefaultPoolSize
	if pool == 0 {
		pool = 20
	}
	settings := map[string]string{
		"listen_addr":     host,
		"unix_socket_dir": dir,
		"pool_mode":       "transaction",
		"auth_type":       "trust",
		"auth_file":       authFile,
		"auth_user":       "postgres",
		"auth_query":      "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1",
		"admin_users":     "postgres",
		// Unused in transaction mode (server_reset_query_always is
		// off); empty says so.
		"server_reset_query":        "",
		"ignore_startup_parameters": "extra_float_digits",
		"max_client_conn":           "1000",
		"default_pool_size":         strconv.Itoa(pool),
		// Tests create and drop a database each; idle server
		// connections to them should not pile up toward
		// max_connections for the default ten minutes.
		"server_idle_timeout": "10",
		"log_connections":     "0",
		"log_disconnections":  "0",
	}
	if len(filepath.Join(dir, ".s.PGSQL.65535")) > 107 {
		settings["unix_socket_dir"] = ""
	}
	maps.Copy(settings, opts.Settings)
	delete(settings, "listen_port")

	for attempt := 1; ; attempt++ {
		b.port = opts.Port
		if b.port == 0 {
			if b.port, err = freePort(); err != nil {
				return nil, fmt.Errorf("pgcluster: %w", err)
			}
		}
		err = b.start(ctx, bin, acct, opts.ServerPort, settings)
		if err == nil {
			return b, nil
		}
		if opts.Port == 0 && errors.Is(err, errPortInUse) && attempt < 5 {
			logf("pgcluster: port %d taken meanwhile; trying another", b.port)
			continue
		}
		return nil, err
	}
}

func (b *PgBouncer) start(ctx context.Context, bin string, acct *account, serverPort int, settings map[string]string) error {
	begin := time.Now()
	var ini strings.Builder
	fmt.Fprintf(&ini, "[databases]\n* = host=%s port=%d\n\n[pgbouncer]\nlisten_port = %d\n", host, serverPort, b.port)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&ini, "%s = %s\n", k, settings[k])
	}
	conf := filepath.Join(b.dir, "pgbouncer.ini")
	if err := writeOwned(conf, ini.String(), acct); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	log, off, err := createLog(b.logPath, acct)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// SIGTERM: immediate shutdown, if the caller dies without stopping it.
	p, err := startProc(acct, log, syscall.SIGTERM, bin, conf)
	log.Close()
	if err != nil {
		return fmt.Errorf("pgcluster: start pgbouncer: %w", err)
	}
	// The admin console answers without a server behind it.
	if err := waitReady(ctx, p, dsn(b.port, "postgres", "pgbouncer")); err != nil {
		p.stop(stopStep{syscall.SIGKILL, 10 * time.Second})
		tail := logTail(b.logPath, off)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("pgcluster: start pgbouncer on port %d: %w%s", b.port, err, tail)
	}
	b.mu.Lock()
	b.proc, b.logOff = p, off
	b.mu.Unlock()
	b.logf("pgcluster: pgbouncer up on %s:%d after %s, in front of port %d", host, b.port, time.Since(begin).Round(time.Millisecond), serverPort)
	return nil
}

// writeOwned writes a file only the server user may read.
func writeOwned(path, content string, a *account) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if a.cred != nil {
		return os.Chown(path, a.uid, a.gid)
	}
	return nil
}

// Stop shuts PgBouncer down at once, cutting its client connections, and
// waits for it to exit. It is idempotent. The error reports a PgBouncer
// that had exited on its own with a failure, or that had to be killed.
func (b *PgBouncer) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.proc
	if p == nil {
		return nil
	}
	b.proc = nil
	wasRunning := !p.exited()
	// SIGTERM is PgBouncer 1.18's immediate shutdown (SIGINT waits for
	// clients to finish),
	err := p.stop(stopStep{syscall.SIGTERM, 30 * time.Second})
	// and exits with status 1 when it does ("got SIGTERM, fast exit").
	var exit *exec.ExitError
	if err == nil || wasRunning && errors.As(err, &exit) && exit.ExitCode() == 1 {
		b.logf("pgcluster: pgbouncer on port %d stopped", b.port)
		return nil
	}
	tail := logTail(b.logPath, b.logOff)
	if !wasRunning {
		return fmt.Errorf("pgcluster: pgbouncer on port %d had exited: %w%s", b.port, err, tail)
	}
	return fmt.Errorf("pgcluster: stop pgbouncer on port %d: %w%s", b.port, err, tail)
}

// Port returns PgBouncer's TCP port on 127.0.0.1.
func (b *PgBouncer) Port() int { return b.port }

// Dir returns PgBouncer's directory (absolute).
func (b *PgBouncer) Dir() string { return b.dir }

// URL returns a DSN for user on database through PgBouncer, without TLS:
// postgres://user@127.0.0.1:port/database?sslmode=disable.
func (b *PgBouncer) URL(user, database string) string {
	return dsn(b.port, user, database)
}
