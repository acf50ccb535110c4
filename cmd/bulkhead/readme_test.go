package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// readmeMarker precedes each README block that TestREADME runs.
const readmeMarker = "<!-- readme-test -->"

// readmeBlocks returns the shell blocks of README.md that follow the marker,
// in order.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != readmeMarker {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```sh" {
			t.Fatalf("README.md:%d: %s is not followed by a ```sh block", i+1, readmeMarker)
		}
		var block []string
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			block = append(block, lines[i])
		}
		blocks = append(blocks, strings.Join(block, "\n"))
	}
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d blocks marked %s; the walk has more", len(blocks), readmeMarker)
	}
	return blocks
}

// freeAddr returns a loopback address nothing listens on (for the moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// buildDevrun builds make run's program into dir.
func buildDevrun(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "devrun")
	if b, err := exec.Command("go", "build", "-o", out, "../../internal/cmd/devrun").CombinedOutput(); err != nil {
		t.Fatalf("build devrun: %v\n%s", err, b)
	}
	return out
}

// The README's commands, run in order as a newcomer would after `make run`
// and `source .dev/env`, against the program `make run` runs (devrun) over
// a test database: every one must succeed (curl fails on an HTTP error
// status). Then Ctrl-C ends make run with exit 0.
func TestREADME(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("the README's commands need jq: make deps installs it")
	}
	db := pgtest.New(t)
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, filepath.Join(work, "bin", "bulkhead")); err != nil {
		t.Fatal(err)
	}
	devrun := buildDevrun(t, t.TempDir())
	addr := freeAddr(t)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var out lockedBuffer // read while devrun still writes to it
	run := exec.CommandContext(ctx, devrun, "-bin", "bin/bulkhead", "-dir", ".dev")
	run.Dir = work
	run.Stdout, run.Stderr = &out, &out
	run.Env = append(os.Environ(),
		// What devrun sets itself over its own PostgreSQL, here the test's.
		"BULKHEAD_DATABASE_URL="+db.AppURL,
		"BULKHEAD_MIGRATE_DATABASE_URL="+db.MigrateURL,
		"BULKHEAD_TENANTS__BOOTSTRAP=demo",
		"BULKHEAD_ADMIN_TOKEN=readme-test-admin-token-0123456789abcdef",
		"BULKHEAD_HTTP_ADDR="+addr,
		"BULKHEAD_LOG_FORMAT=json",
	)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("make run's output:\n%s", out.String())
		}
	}()
	waitReady(t, "http://"+addr+"/readyz", exited)

	env, err := os.ReadFile(filepath.Join(work, ".dev", "env"))
	if err != nil {
		t.Fatalf(".dev/env: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(work, ".dev", "env")); fi.Mode().Perm() != 0o600 {
		t.Errorf(".dev/env mode %v, want 0600: it holds secrets", fi.Mode().Perm())
	}
	for _, want := range []string{"BULKHEAD_DATABASE_URL=", "BULKHEAD_MIGRATE_DATABASE_URL=", "BULKHEAD_ADMIN_TOKEN=",
		"BULKHEAD_HTTP_ADDR='" + addr + "'", "BH_URL='http://" + addr + "'", "BH_KEY='bh_"} {
		if !strings.Contains(string(env), want) {
			t.Errorf(".dev/env lacks %s:\n%s", want, env)
		}
	}
	if !strings.Contains(out.String(), "source .dev/env") || !strings.Contains(out.String(), "http://"+addr+"/console/") {
		t.Errorf("the banner does not say `source .dev/env` or the real address %s", addr)
	}

	// curl fails on an HTTP error status here, so that a README command
	// answered with a problem fails the test; the README keeps plain curl -s.
	script := "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n" +
		strings.Join(readmeBlocks(t), "\n")
	sh := exec.CommandContext(ctx, "bash", "-c", script)
	sh.Dir = work
	// A clean environment, as a newcomer's shell: nothing BULKHEAD_ but
	// what .dev/env sets.
	sh.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work}
	b, err := sh.CombinedOutput()
	t.Logf("the README's commands:\n%s", b)
	if err != nil {
		t.Fatalf("the README's commands failed: %v", err)
	}
	// The month's summary counts January only: `to` is inclusive.
	if !strings.Contains(string(b), `{"amount":"220.00","currency":"USD","key":"AmazonEC2"}`) {
		t.Errorf("the README's January summary is not AmazonEC2 220 USD")
	}

	// Ctrl-C: make run stops the server and exits 0.
	if err := run.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("make run after Ctrl-C: %v, want exit 0", err)
		}
	case <-ctx.Done():
		t.Fatal("make run did not stop after Ctrl-C")
	}
}

func waitReady(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("make run ended before serving: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 3 minutes", url)
		}
	}
}

// A busy address stops make run and serve at once, with one line naming
// BULKHEAD_HTTP_ADDR, exit 2.
func TestBusyAddressNamesTheKey(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	db := pgtest.New(t)

	code, _, stderr := runCLI(t, []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_HTTP_ADDR=" + addr}, "serve")
	if code != exitUsage || !strings.Contains(stderr, "http.addr") || !strings.Contains(stderr, "BULKHEAD_HTTP_ADDR") {
		t.Errorf("serve on a busy address: exit %d, %q; want 2 naming http.addr and BULKHEAD_HTTP_ADDR", code, stderr)
	}

	work := t.TempDir()
	devrun := buildDevrun(t, work)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, devrun, "-bin", binary, "-dir", filepath.Join(work, ".dev"))
	cmd.Env = append(os.Environ(), "BULKHEAD_HTTP_ADDR="+addr, "BULKHEAD_DATABASE_URL="+db.AppURL)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err = cmd.Run()
	got := strings.TrimSpace(errOut.String())
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitUsage || strings.Contains(got, "\n") ||
		!strings.Contains(got, "BULKHEAD_HTTP_ADDR") || !strings.Contains(got, addr) {
		t.Errorf("make run on a busy address: %v, stderr %q; want exit 2 and one line naming BULKHEAD_HTTP_ADDR and %s", err, got, addr)
	}
	if _, err := os.Stat(filepath.Join(work, ".dev", "env")); err == nil {
		t.Error("make run on a busy address wrote .dev/env")
	}
}

// fakeTTY is a stdin a person is at.
type fakeTTY struct{ *strings.Reader }

func (fakeTTY) IsTerminal() bool { return true }

// tenant delete asks for the slug on a terminal, refuses without one unless
// --yes, and deletes nothing it was not told to.
func TestTenantDeleteConfirms(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL}
	if code, _, stderr := runCLI(t, env, "tenant", "create", "acme"); code != 0 {
		t.Fatalf("tenant create: %d %s", code, stderr)
	}
	exists := func() bool {
		code, _, _ := runCLI(t, env, "tenant", "show", "acme")
		return code == 0
	}
	code, _, stderr := runCLI(t, env, "tenant", "delete", "acme")
	if code != exitUsage || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "--yes") {
		t.Errorf("tenant delete without a terminal or --yes: exit %d, %q; want 2 and one line naming --yes", code, stderr)
	}
	if !exists() {
		t.Fatal("tenant delete without --yes deleted the tenant")
	}
	ask := func(answer string) (int, string) {
		var out, errOut bytes.Buffer
		code := runWith(t.Context(), []string{"tenant", "delete", "acme"}, env, fakeTTY{strings.NewReader(answer)}, &out, &errOut)
		return code, errOut.String()
	}
	if code, stderr := ask("globex\n"); code != exitFailure || !strings.Contains(stderr, "Type the slug") || !exists() {
		t.Errorf("answered with another slug: exit %d, %q; want 1 and the tenant kept", code, stderr)
	}
	if code, stderr := ask("acme\n"); code != exitOK || exists() {
		t.Errorf("answered with its slug: exit %d, %q; want it deleted", code, stderr)
	}
	if code, _, stderr := runCLI(t, env, "tenant", "create", "acme"); code != 0 {
		t.Fatalf("tenant create: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, env, "tenant", "delete", "acme", "--yes"); code != exitOK || exists() {
		t.Errorf("tenant delete --yes: exit %d, %s", code, stderr)
	}
}

// bulkhead version says which build this is.
func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary, "version", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version"`, `"commit"`, `"go_version": "go1.`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bulkhead version -o json: %s; want %s", out, want)
		}
	}
}

// lockedBuffer is a bytes.Buffer a running command may write to while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
