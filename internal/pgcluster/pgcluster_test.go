package pgcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start starts a cluster for t, stopped when t ends.
func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if _, err := FindBin(); err != nil {
		t.Fatal(err)
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "pg")
	}
	opts.Logf = t.Logf
	c, err := Start(ctxFor(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctxFor(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func connectConfig(t *testing.T, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctxFor(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestFindBin(t *testing.T) {
	dir, err := FindBin()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("FindBin() = %s: %v", dir, err)
		}
	}

	t.Setenv("PG_BINDIR", dir)
	if got, err := FindBin(); err != nil || got != dir {
		t.Errorf("with PG_BINDIR=%s: FindBin() = %q, %v", dir, got, err)
	}
	empty := t.TempDir()
	t.Setenv("PG_BINDIR", empty)
	_, err = FindBin()
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "PG_BINDIR="+empty) {
		t.Errorf("with an empty PG_BINDIR: FindBin() error = %v, want ErrNotInstalled naming PG_BINDIR", err)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	c := start(t, Options{Settings: map[string]string{"work_mem": "7MB"}})
	conn := connect(t, c.URL("postgres", "postgres"))

	var one int
	if err := conn.QueryRow(context.Background(), "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	for setting, want := range map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "600",
		"shared_buffers":     "256MB",
		"work_mem":           "7MB",
		"server_encoding":    "UTF8",
		"listen_addresses":   "127.0.0.1",
		"port":               "",
	} {
		if setting == "port" {
			want = strconv.Itoa(c.Port())
		}
		if got := queryString(t, conn, "select current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, conn, "select current_user"); got != "postgres" {
		t.Errorf("current_user = %q, want postgres", got)
	}
	if c.Host() != "127.0.0.1" || !strings.HasPrefix(c.URL("u", "d"), "postgres://u@127.0.0.1:") {
		t.Errorf("Host() = %q, URL = %q", c.Host(), c.URL("u", "d"))
	}

	// The unix socket is in Dir.
	sock := connect(t, "host="+c.Dir()+" port="+strconv.Itoa(c.Port())+" user=postgres dbname=postgres")
	if got := queryString(t, sock, "select coalesce(inet_client_addr()::text, 'unix')"); got != "unix" {
		t.Errorf("over the socket, client address = %q", got)
	}

	// The server runs as the user initdb refuses to be root for.
	fi, err := os.Stat(filepath.Join(c.Dir(), "data", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if owner := fi.Sys().(*syscall.Stat_t).Uid; owner == 0 {
		t.Errorf("the data directory belongs to root")
	}
}

func TestStartRejectsManagedSettings(t *testing.T) {
	t.Parallel()
	_, err := Start(ctxFor(t), Options{Dir: t.TempDir(), Settings: map[string]string{"port": "5432"}})
	if err == nil || !strings.Contains(err.Error(), "port") {
		t.Fatalf("Start with Settings[port] error = %v, want a refusal", err)
	}
}

func TestStopStartAgain(t *testing.T) {
	t.Parallel()
	c := start(t, Options{})
	ctx := ctxFor(t)
	port := c.Port()
	conn := connect(t, c.URL("postgres", "postgres"))
	if _, err := conn.Exec(ctx, "create table kept (v text); insert into kept values ('before stop')"); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if c.Running() {
		t.Fatal("Running() after Stop")
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a connection survived Stop")
	}
	if down, err := pgx.Connect(ctx, c.URL("postgres", "postgres")); err == nil {
		down.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Fatalf("port %d after StartAgain, was %d", c.Port(), port)
	}
	if err := c.StartAgain(ctx); err != nil {
		t.Fatalf("StartAgain while running: %v", err)
	}
	again := connect(t, c.URL("postgres", "postgres"))
	if got := queryString(t, again, "select v from kept"); got != "before stop" {
		t.Fatalf("after StartAgain: %q", got)
	}

	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	recovered := connect(t, c.URL("postgres", "postgres"))
	if got := queryString(t, recovered, "select v from kept"); got != "before stop" {
		t.Fatalf("after an immediate stop: %q", got)
	}
}

func TestPersistent(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pg")
	first := start(t, Options{Dir: dir, Persistent: true})
	conn := connect(t, first.URL("postgres", "postgres"))
	if _, err := conn.Exec(ctxFor(t), "create database kept"); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	if _, err := Start(ctxFor(t), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "already holds a cluster") {
		t.Fatalf("Start without Persistent on an existing cluster: %v", err)
	}

	second := start(t, Options{Dir: dir, Persistent: true})
	conn = connect(t, second.URL("postgres", "kept"))
	if got := queryString(t, conn, "select current_database()"); got != "kept" {
		t.Fatalf("current_database() = %q", got)
	}
}

// TestPrepareDirRefuses checks the refusal without needing root: an account
// that is not the owner of a private directory outside the temporary
// directory cannot enter it.
func TestPrepareDirRefuses(t *testing.T) {
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(private, "elsewhere"))
	stranger := &account{name: "stranger", uid: os.Getuid() + 4242, gid: os.Getgid() + 4242, cred: &syscall.Credential{}}
	err := prepareDir(filepath.Join(private, "pg"), stranger, t.Logf)
	if !errors.Is(err, ErrDirNotReachable) || !strings.Contains(err.Error(), private) {
		t.Fatalf("prepareDir error = %v, want ErrDirNotReachable naming %s", err, private)
	}
}

func TestPgBouncer(t *testing.T) {
	t.Parallel()
	if _, err := FindPgBouncer(); err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{})
	ctx := ctxFor(t)
	// One server connection per database and user, so that every client
	// below shares it: what one leaves behind, the next one sees.
	b, err := StartPgBouncer(ctx, PgBouncerOptions{
		Dir:             filepath.Join(t.TempDir(), "pgbouncer"),
		ServerPort:      c.Port(),
		DefaultPoolSize: 1,
		Logf:            t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
		if err := b.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})
	if b.Port() == c.Port() || !strings.Contains(b.URL("postgres", "postgres"), ":"+strconv.Itoa(b.Port())+"/") {
		t.Fatalf("PgBouncer port %d, URL %s", b.Port(), b.URL("postgres", "postgres"))
	}

	// A startup parameter PgBouncer cannot carry is refused, not
	// silently dropped: a dropped search_path would send queries to
	// another schema.
	if conn, err := pgx.Connect(ctx, b.URL("postgres", "postgres")+"&search_path=elsewhere"); err == nil {
		conn.Close(ctx)
		t.Fatal("PgBouncer accepted a search_path startup parameter")
	} else if !strings.Contains(err.Error(), "search_path") {
		t.Fatalf("connecting with search_path: %v", err)
	}

	// A role created after PgBouncer started logs in through it.
	admin := connect(t, c.URL("postgres", "postgres"))
	if _, err := admin.Exec(ctx, "create role late_comer login"); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			for _, user := range []string{"postgres", "late_comer"} {
				cfg, err := pgx.ParseConfig(b.URL(user, "postgres"))
				if err != nil {
					t.Fatal(err)
				}
				cfg.DefaultQueryExecMode = mode
				var conns [2]*pgx.Conn
				for i := range conns {
					if conns[i], err = pgx.ConnectConfig(ctx, cfg); err != nil {
						t.Fatal(err)
					}
					defer conns[i].Close(ctx)
				}
				for i := range 6 {
					conn := conns[i%2]
					var got int
					var who string
					if err := conn.QueryRow(ctx, "select $1::int + 1, current_user", i).Scan(&got, &who); err != nil {
						t.Fatalf("%s, query %d: %v", user, i, err)
					}
					if got != i+1 || who != user {
						t.Fatalf("%s, query %d: got %d as %s", user, i, got, who)
					}
					err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
						return tx.QueryRow(ctx, "select $1::text || current_user", "hello ").Scan(&who)
					})
					if err != nil || who != "hello "+user {
						t.Fatalf("%s, transaction %d: %q, %v", user, i, who, err)
					}
				}
			}
		})
	}

	t.Run("SET LOCAL does not survive the transaction", func(t *testing.T) {
		// Named prepared statements do not survive transaction pooling
		// before PgBouncer 1.21: the server needs an exec mode that works
		// behind it.
		cfg, err := pgx.ParseConfig(b.URL("postgres", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		a := connectConfig(t, cfg)
		other := connectConfig(t, cfg)
		// Control: the two clients share one server connection, so a
		// session-level SET by one is seen by the other.
		if _, err := a.Exec(ctx, "set app.shared = 'session'"); err != nil {
			t.Fatal(err)
		}
		if got := queryString(t, other, "select current_setting('app.shared', true)"); got != "session" {
			t.Fatalf("the clients do not share a server connection (other sees %q); the test proves nothing", got)
		}

		const tenant = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
		// The one-round-trip binding the design prescribes.
		tx, err := a.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL app.tenant_id = '" + tenant + "'"})
		if err != nil {
			t.Fatal(err)
		}
		var inside string
		if err := tx.QueryRow(ctx, "select current_setting('app.tenant_id', true)").Scan(&inside); err != nil {
			t.Fatal(err)
		}
		if inside != tenant {
			t.Fatalf("inside the transaction app.tenant_id = %q", inside)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}

		rolledBack, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rolledBack.Exec(ctx, "set local app.tenant_id = '"+tenant+"'"); err != nil {
			t.Fatal(err)
		}
		if err := rolledBack.Rollback(ctx); err != nil {
			t.Fatal(err)
		}

		for name, conn := range map[string]*pgx.Conn{"the same client": a, "another client": other} {
			var after *string
			if err := conn.QueryRow(ctx, "select nullif(current_setting('app.tenant_id', true), '')").Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != nil {
				t.Errorf("%s sees app.tenant_id = %q after the transaction", name, *after)
			}
		}
		if _, err := a.Exec(ctx, "reset app.shared"); err != nil {
			t.Fatal(err)
		}
	})
}
