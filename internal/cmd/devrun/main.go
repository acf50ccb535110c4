// Command devrun is `make run`: a server a person can use at once.
//
// With no BULKHEAD_DATABASE_URL set it starts a local PostgreSQL whose data
// lives under .dev/ (kept between runs), migrates it, makes sure the demo
// tenant exists, creates an editor key, writes .dev/env (the database URLs,
// admin token, key and address, for `source .dev/env`), prints ready-to-paste
// curl lines and runs `bulkhead serve` in the community profile on http.addr
// (127.0.0.1:8080 unless BULKHEAD_HTTP_ADDR says otherwise). A busy address
// is one line naming BULKHEAD_HTTP_ADDR, exit 2. Ctrl-C stops the server and
// the database, exit 0. With BULKHEAD_DATABASE_URL set it migrates (when
// BULKHEAD_MIGRATE_DATABASE_URL is set too) and serves that.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgcluster"
)

const demo = "demo"

func main() {
	bin := flag.String("bin", "bin/bulkhead", "the bulkhead binary")
	dir := flag.String("dir", ".dev", "where the local PostgreSQL keeps its data, and the env file")
	flag.Parse()
	err := run(*bin, *dir)
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

// usageError is the operator's to fix (a busy address): exit 2.
type usageError struct{ error }

func run(bin, dir string) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	env := os.Environ()
	// The address comes first: a busy one is found before anything starts.
	addr, err := httpAddr(bin, env)
	if err != nil {
		return err
	}
	if err := free(addr); err != nil {
		return err
	}
	if os.Getenv("BULKHEAD_DATABASE_URL") == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		abs, err := filepath.Abs(filepath.Join(dir, "pg"))
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "starting PostgreSQL in", abs)
		// PL/pgSQL preloaded, as the README advises for servers of
		// tenant databases: the database strategy's fence is a PL/pgSQL
		// function, which each new backend would otherwise load first.
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: abs, Persistent: true,
			Settings: map[string]string{"shared_preload_libraries": "plpgsql"}})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
			}
		}()
		if err := createDatabase(ctx, cluster.URL("postgres", "postgres"), "bulkhead"); err != nil {
			return err
		}
		token, err := adminToken(dir)
		if err != nil {
			return err
		}
		env = append(env,
			"BULKHEAD_MIGRATE_DATABASE_URL="+cluster.URL("postgres", "bulkhead"),
			"BULKHEAD_DATABASE_URL="+cluster.URL("bulkhead_app", "bulkhead"),
			"BULKHEAD_TENANTS__BOOTSTRAP="+demo,
			"BULKHEAD_ADMIN_TOKEN="+token,
		)
	}
	base := baseURL(addr)
	if hasEnv(env, "BULKHEAD_MIGRATE_DATABASE_URL") {
		if _, err := bulkhead(bin, env, "migrate"); err != nil {
			return err
		}
		out, err := bulkhead(bin, env, "key", "create", "--tenant", demo, "--role", "editor", "-o", "json")
		if err != nil {
			return err
		}
		var key struct{ Key string }
		if err := json.Unmarshal(out, &key); err != nil {
			return fmt.Errorf("read the demo key: %w", err)
		}
		path := filepath.Join(dir, "env")
		if err := writeEnv(path, env, addr, base, key.Key); err != nil {
			return err
		}
		banner(base, key.Key, lookup(env, "BULKHEAD_ADMIN_TOKEN"), path)
	}

	serve := exec.Command(bin, "serve")
	serve.Env, serve.Stdout, serve.Stderr = env, os.Stdout, os.Stderr
	if err := serve.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	select {
	case sig := <-sigs:
		// Ctrl-C is how make run is meant to end: serve drains and exits 0,
		// and so does this, so that make reports no error.
		_ = serve.Process.Signal(sig)
		if err := <-exited; err != nil {
			return fmt.Errorf("bulkhead serve: %w", err)
		}
		fmt.Fprintln(os.Stderr, "make run: stopped")
		return nil
	case err := <-exited:
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 2 {
			return usageError{errors.New("bulkhead serve refused its configuration (above)")}
		}
		return err
	}
}

// httpAddr is http.addr as the server will read it, from whichever layer
// sets it: bulkhead config says.
func httpAddr(bin string, env []string) (string, error) {
	out, err := bulkhead(bin, env, "config", "-o", "json")
	if err != nil {
		return "", err
	}
	var entries []struct {
		Key   string
		Value any
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		return "", fmt.Errorf("read bulkhead config: %w", err)
	}
	for _, e := range entries {
		if e.Key == "http.addr" {
			if s, ok := e.Value.(string); ok && s != "" {
				return s, nil
			}
		}
	}
	return "127.0.0.1:8080", nil
}

// free reports a busy address as one line naming the variable that moves
// it. (The server checks again when it listens: this is so that nothing
// starts, and no key is made, for a server that cannot.)
func free(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return usageError{fmt.Errorf("http.addr %s is already in use by another process: set BULKHEAD_HTTP_ADDR to a free address, e.g. BULKHEAD_HTTP_ADDR=127.0.0.1:18080 make run", addr)}
	}
	if err != nil {
		return usageError{fmt.Errorf("http.addr %s: %w (set BULKHEAD_HTTP_ADDR)", addr, err)}
	}
	return ln.Close()
}

// envVars are what writeEnv copies from the server's environment: what the
// CLI needs (both DSNs: migrate_url is the owner's, for tenant and key
// commands; url the serving role's, for verify) and the admin token.
var envVars = []string{"BULKHEAD_DATABASE_URL", "BULKHEAD_MIGRATE_DATABASE_URL", "BULKHEAD_ADMIN_TOKEN"}

// writeEnv writes the file `source .dev/env` reads: the configuration the
// CLI needs to reach this server's database, plus BH_URL and BH_KEY for
// curl. It holds secrets, so only its owner may read it.
func writeEnv(path string, env []string, addr, base, key string) error {
	var b strings.Builder
	b.WriteString("# Written by make run: `source .dev/env`, then the README's commands work as they are.\n")
	for _, name := range envVars {
		if v := lookup(env, name); v != "" {
			fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(v))
		}
	}
	fmt.Fprintf(&b, "export BULKHEAD_HTTP_ADDR=%s\n", shellQuote(addr))
	b.WriteString("# For curl: the server's address and the demo tenant's editor key. (Not configuration: BH_, not BULKHEAD_.)\n")
	fmt.Fprintf(&b, "export BH_URL=%s\n", shellQuote(base))
	fmt.Fprintf(&b, "export BH_KEY=%s\n", shellQuote(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func bulkhead(bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, os.Stderr
	if err := cmd.Run(); err != nil {
		err = fmt.Errorf("bulkhead %s: %w", strings.Join(args, " "), err)
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 2 {
			return nil, usageError{err} // bad configuration, named above
		}
		return nil, err
	}
	return out.Bytes(), nil
}

func createDatabase(ctx context.Context, dsn, name string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize())
	return err
}

// adminToken returns the dev server's admin token, made once and kept in
// dir so that it survives restarts.
func adminToken(dir string) (string, error) {
	path := filepath.Join(dir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 24)
	rand.Read(b)
	token := hex.EncodeToString(b)
	return token, os.WriteFile(path, []byte(token+"\n"), 0o600)
}

// baseURL is where a browser on this machine reaches the server listening
// on addr (http.addr; 127.0.0.1:8080 when unset).
func baseURL(addr string) string {
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func banner(base, key, token, envFile string) {
	fmt.Printf(`
Bulkhead is starting on %[1]s (profile community, isolation rls).

  console:     %[1]s/console/  (sign in with the editor key; operators with the admin token at %[1]s/console/admin)
  tenant:      %[2]s
  editor key:  %[3]s
  admin token: %[4]s

In another shell, for the README's commands (bin/bulkhead and curl):

  source %[5]s

Try it:

  curl -s -X POST %[1]s/v1/accounts -H 'Authorization: Bearer %[3]s' -H 'Content-Type: application/json' -d '{"provider":"aws","external_id":"123456789012","name":"production"}'
  curl -s %[1]s/v1/accounts -H 'Authorization: Bearer %[3]s'

Ctrl-C stops the server and the database.

`, base, demo, key, token, envFile)
}

func hasEnv(env []string, name string) bool { return lookup(env, name) != "" }

func lookup(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val // the last one wins, as for the process
		}
	}
	return v
}
