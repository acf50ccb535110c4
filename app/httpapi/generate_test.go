package httpapi_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The checked-in api.gen.go is exactly what oapi-codegen (the version go.mod
// pins as a tool) generates from openapi.yaml: the spec cannot drift from
// the server. The generator writes into a temporary directory, so the
// working tree is never touched.
func TestGeneratedCodeMatchesSpec(t *testing.T) {
	t.Parallel()
	cfg, err := os.ReadFile("oapi-codegen.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte("\noutput: api.gen.go\n")) {
		t.Fatalf("oapi-codegen.yaml does not write api.gen.go:\n%s", cfg)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "api.gen.go")
	tmpCfg := filepath.Join(dir, "oapi-codegen.yaml")
	if err := os.WriteFile(tmpCfg, bytes.Replace(cfg, []byte("\noutput: api.gen.go\n"), []byte("\noutput: "+out+"\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", tmpCfg, "openapi.yaml")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go tool oapi-codegen: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("api.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		line := 0
		for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
			line++
		}
		t.Fatalf("api.gen.go differs from what openapi.yaml generates, from line %d: run `make generate` and commit the result", line+1)
	}
}
