// Command devrun is `make run`: a server a person can use at once.
//
// With no BULKHEAD_DATABASE_URL set it starts a local PostgreSQL whose data
// lives under .dev/ (kept between runs), migrates it, makes sure the demo
// tenant exists, creates an editor key, prints a ready-to-paste curl line and
// runs `bulkhead serve` in the community profile on 127.0.0.1:8080. Ctrl-C
// stops the server and the database. With BULKHEAD_DATABASE_URL set it
// migrates (when BULKHEAD_MIGRATE_DATABASE_URL is set too) and serves that.
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
	dir := flag.String("dir", ".dev", "where the local PostgreSQL keeps its data")
	flag.Parse()
	if err := run(*bin, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(bin, dir string) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	env := os.Environ()
	if os.Getenv("BULKHEAD_DATABASE_URL") == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		abs, err := filepath.Abs(filepath.Join(dir, "pg"))
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "starting PostgreSQL in", abs)
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: abs, Persistent: true})
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
		banner(baseURL(lookup(env, "BULKHEAD_HTTP_ADDR")), key.Key, lookup(env, "BULKHEAD_ADMIN_TOKEN"))
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
		_ = serve.Process.Signal(sig)
		return <-exited
	case err := <-exited:
		return err
	}
}

func bulkhead(bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bulkhead %s: %w", strings.Join(args, " "), err)
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

func banner(base, key, token string) {
	fmt.Printf(`
Bulkhead is starting on %[1]s (profile community, isolation rls).

  console:     %[1]s/console/  (sign in with the editor key; operators with the admin token at %[1]s/console/admin)
  tenant:      %[2]s
  editor key:  %[3]s
  admin token: %[4]s

Try it:

  curl -s -X POST %[1]s/v1/accounts -H 'Authorization: Bearer %[3]s' -H 'Content-Type: application/json' -d '{"provider":"aws","external_id":"123456789012","name":"production"}'
  curl -s %[1]s/v1/accounts -H 'Authorization: Bearer %[3]s'

Ctrl-C stops the server and the database.

`, base, demo, key, token)
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
