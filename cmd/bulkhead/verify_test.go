package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// verifyBinary runs the built bulkhead verify -o json against db and
// returns its exit status, its findings and its stderr.
func verifyBinary(t *testing.T, db *pgtest.DB) (int, []isolation.Finding, string) {
	t.Helper()
	cmd := exec.Command(binary, "verify", "-o", "json")
	cmd.Env = append(os.Environ(), "BULKHEAD_DATABASE_URL="+db.AppURL, "BULKHEAD_LOG_FORMAT=json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var findings []isolation.Finding
	if err := json.Unmarshal(stdout.Bytes(), &findings); err != nil {
		t.Fatalf("verify -o json printed %q (stderr %s): %v", stdout.String(), stderr.String(), err)
	}
	return code, findings, stderr.String()
}

// On a freshly migrated database the real binary reports nothing and exits
// 0; on a flawed one it exits 1 and names every flaw in JSON, critical
// first.
func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	clean := pgtest.New(t)
	if code, findings, stderr := verifyBinary(t, clean); code != exitOK || len(findings) != 0 {
		t.Fatalf("verify on a fresh database: exit %d, findings %v, stderr %s", code, findings, stderr)
	}

	flawed := pgtest.New(t)
	flawed.Exec(t, `ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY`)
	flawed.Exec(t, `GRANT TRUNCATE ON accounts TO bulkhead_app`)
	flawed.Exec(t, `CREATE VIEW every_account AS SELECT * FROM accounts`)
	flawed.Exec(t, `GRANT SELECT ON every_account TO bulkhead_app`)
	code, findings, stderr := verifyBinary(t, flawed)
	if code != exitFailure {
		t.Fatalf("verify on a flawed database: exit %d, want 1; stderr %s", code, stderr)
	}
	var codes []string
	for _, f := range findings {
		if f.Code == "" || f.Severity == "" || f.Object == "" || f.Fix == "" {
			t.Errorf("incomplete finding %+v", f)
		}
		codes = append(codes, f.Code)
	}
	for _, want := range []string{verify.CodeTableRLSNotForced, verify.CodeTableDangerousGrant, verify.CodeViewNotSecurityInvoker} {
		if !strings.Contains(strings.Join(codes, " "), want) {
			t.Errorf("verify does not report %s: %v", want, findings)
		}
	}
	if !strings.Contains(stderr, "isolation findings") {
		t.Errorf("stderr does not sum the findings up: %s", stderr)
	}
}

// serve refuses to start (exit 2) on a critical finding of the database,
// not only on a bypassing role, and names it.
func TestServeRefusesACriticalFinding(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.Exec(t, `CREATE FUNCTION current_tenant() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT current_setting('app.tenant_id', true) $$`)
	code, _, stderr := runCLI(t, []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_HTTP_ADDR=127.0.0.1:0"}, "serve")
	if code != exitUsage || !strings.Contains(stderr, verify.CodeFunctionImmutableSetting) {
		t.Fatalf("serve over an IMMUTABLE tenant function: exit %d, want 2 naming %s; stderr: %s", code, verify.CodeFunctionImmutableSetting, stderr)
	}
}

// Verify finds nothing on a database set up as `make run` sets one up — a
// new database, whose PUBLIC may create temporary tables until migrate
// revokes it, migrated as the superuser with a demo tenant bootstrapped and
// given a key — nor after a tenant is provisioned on each strategy, nor
// after migrating again, nor when it reads the catalogs through PgBouncer
// in transaction mode.
func TestVerifyIsCleanOnEveryStrategy(t *testing.T) {
	t.Parallel()
	db := pgtest.Empty(t)
	db.Exec(t, `GRANT TEMPORARY ON DATABASE `+db.Name+` TO PUBLIC`) // as CREATE DATABASE leaves it
	env := []string{"BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL, "BULKHEAD_DATABASE_URL=" + db.AppURL}
	// make run bootstraps a demo tenant on the default strategy with
	// migrate, and gives it an editor key.
	if code, _, stderr := runCLI(t, append(env, "BULKHEAD_TENANTS__BOOTSTRAP=demo"), "migrate"); code != exitOK {
		t.Fatalf("migrate: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, env, "key", "create", "--tenant", "demo", "--role", "editor", "-o", "json"); code != exitOK {
		t.Fatalf("key create: exit %d: %s", code, stderr)
	}
	clean := func(step string, env []string) {
		t.Helper()
		if code, out, stderr := runCLI(t, env, "verify"); code != exitOK {
			t.Errorf("verify %s: exit %d:\n%s%s", step, code, out, stderr)
		}
	}
	clean("after migrate", env)
	for _, s := range []string{isolation.RLS, isolation.Schema, isolation.Database} {
		slug := "on-" + s
		// migrate sets up the strategy it is run for (the database
		// strategy's template, say), as an operator who adds one does.
		if code, _, stderr := runCLI(t, env, "--isolation", s, "migrate"); code != exitOK {
			t.Fatalf("migrate --isolation %s: exit %d: %s", s, code, stderr)
		}
		if code, _, stderr := runCLI(t, env, "--isolation", s, "tenant", "create", slug); code != exitOK {
			t.Fatalf("tenant create --isolation %s: exit %d: %s", s, code, stderr)
		}
		t.Cleanup(func() { runCLI(t, env, "tenant", "delete", slug, "--yes") })
		clean("after provisioning on "+s, env)
	}
	if code, _, stderr := runCLI(t, env, "migrate"); code != exitOK {
		t.Fatalf("migrate again: exit %d: %s", code, stderr)
	}
	clean("after migrating again", env)
	clean("through PgBouncer", []string{"BULKHEAD_DATABASE_URL=" + apitest.PgBouncerURL(t, db), "BULKHEAD_DATABASE__POOLER=pgbouncer"})
}
