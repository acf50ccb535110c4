// Package strategylists writes the lists of isolation strategies that
// files outside Go hold — the OpenAPI enum of a tenant's isolation, the
// Helm chart's schema enum and values comment — from the one list in Go
// (app.Strategies), and says when a checked-in file is not current.
// internal/cmd/strategylists runs it (go generate ./app); a test of app
// fails when a file is stale.
package strategylists

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// file is one checked-in file and how to rewrite its list.
type file struct {
	path    string
	pattern *regexp.Regexp                            // its matches (one at least) are replaced
	render  func(sub [][]byte, names []string) []byte // sub: the match's submatches
}

var files = []file{
	{
		path:    "app/httpapi/openapi.yaml",
		pattern: regexp.MustCompile(`(?m)^(\s+isolation: \{ type: string, enum: )\[[^\]]*\]( \})$`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + "[" + strings.Join(names, ", ") + "]" + string(sub[2]))
		},
	},
	{
		path:    "app/httpapi/openapi.yaml",
		pattern: regexp.MustCompile(`(to: \{ type: string, description: "The strategy to move to, )[^"(]*( \(not with abort\))`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + OrList(names) + string(sub[2]))
		},
	},
	{
		path:    "helm/bulkhead/values.schema.json",
		pattern: regexp.MustCompile(`("description": "Isolation strategy \(BULKHEAD_ISOLATION\)\.",\n(\s+)"enum": )\[[^\]]*\]`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + jsonList(names, string(sub[2])))
		},
	},
	{
		path:    "app/httpapi/openapi.yaml",
		pattern: regexp.MustCompile(`(description: "The strategy to place the tenant in, )[^"(]*( \(default)`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + OrList(names) + string(sub[2]))
		},
	},
	{
		path:    "helm/bulkhead/values.schema.json",
		pattern: regexp.MustCompile(`("allowed": \{\n[^\[]*?\n(\s+)"enum": )\[[^\]]*\]`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + jsonList(names, string(sub[2])))
		},
	},
	{
		path:    "helm/bulkhead/values.yaml",
		pattern: regexp.MustCompile(`(?m)^(\s+# -- Isolation strategy: ).*\.$`),
		render: func(sub [][]byte, names []string) []byte {
			return []byte(string(sub[1]) + OrList(names) + ".")
		},
	},
}

// jsonList is names as a JSON array of strings, one a line, its closing
// bracket at indent.
func jsonList(names []string, indent string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = indent + "  " + strconv.Quote(n)
	}
	return "[\n" + strings.Join(quoted, ",\n") + "\n" + indent + "]"
}

// OrList joins names as "a, b or c".
func OrList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Render returns each file under root, by its path relative to root, with
// its list of strategies made names.
func Render(root string, names []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, f := range files {
		b, ok := out[f.path] // a file may hold lists of several shapes
		if !ok {
			var err error
			if b, err = os.ReadFile(filepath.Join(root, f.path)); err != nil {
				return nil, err
			}
		}
		if len(f.pattern.FindAllIndex(b, -1)) == 0 {
			return nil, fmt.Errorf("%s: no list of strategies (pattern %s)", f.path, f.pattern)
		}
		out[f.path] = f.pattern.ReplaceAllFunc(b, func(m []byte) []byte { return f.render(f.pattern.FindSubmatch(m), names) })
	}
	return out, nil
}

// Stale lists the files under root whose list of strategies is not names.
func Stale(root string, names []string) ([]string, error) {
	want, err := Render(root, names)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, f := range files {
		if slices.Contains(stale, f.path) {
			continue
		}
		have, err := os.ReadFile(filepath.Join(root, f.path))
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(have, want[f.path]) {
			stale = append(stale, f.path)
		}
	}
	return stale, nil
}

// Write rewrites the files under root whose list is not names, and
// returns their paths.
func Write(root string, names []string) ([]string, error) {
	stale, err := Stale(root, names)
	if err != nil {
		return nil, err
	}
	want, err := Render(root, names)
	if err != nil {
		return nil, err
	}
	for _, p := range stale {
		if err := os.WriteFile(filepath.Join(root, p), want[p], 0o644); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// Root finds the module root from dir: the nearest directory up holding
// go.mod.
func Root(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}
