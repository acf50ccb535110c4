package apilint

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lint runs scripts/apilint.sh on doc; the first run on a machine installs
// the linters into a cache (minutes), later ones take seconds.
func lint(t *testing.T, doc string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../scripts/apilint.sh", doc)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("apilint did not finish within 15 minutes:\n%s", out)
	}
	return string(out), err
}

// The OpenAPI document passes Spectral's and Redocly's recommended rules,
// warnings included.
func TestOpenAPIDocumentIsClean(t *testing.T) {
	t.Parallel()
	doc, err := filepath.Abs("../../app/httpapi/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := lint(t, doc); err != nil {
		t.Fatalf("scripts/apilint.sh: %v\n%s", err, out)
	}
}

// The lint is not vacuous: a document that breaks a recommended rule (an
// operation without a summary) fails it, naming the rule.
func TestLintCatchesAFinding(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../../app/httpapi/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const summary = "      summary: Create a cloud account.\n"
	if !strings.Contains(string(src), summary) {
		t.Fatal("the document no longer has the summary this test removes")
	}
	bad := filepath.Join(t.TempDir(), "openapi.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), summary, "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := lint(t, bad)
	if err == nil || !strings.Contains(out, "operation-summary") {
		t.Fatalf("a document without an operation's summary: err %v, want a failure naming operation-summary:\n%s", err, out)
	}
}
