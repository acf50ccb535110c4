package verify_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Every finding code — this package's and the strategies' — is listed in
// docs/VERIFY.md with the flaw that triggers it.
func TestEveryCodeIsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/VERIFY.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range []string{"codes.go", "../schema/verify.go", "../database/verify.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(node ast.Node) bool {
			spec, ok := node.(*ast.ValueSpec)
			if !ok || len(spec.Names) != 1 || !strings.HasPrefix(spec.Names[0].Name, "Code") || len(spec.Values) != 1 {
				return true
			}
			lit, ok := spec.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			code, _ := strconv.Unquote(lit.Value)
			n++
			if !strings.Contains(string(doc), "| `"+code+"` |") {
				t.Errorf("%s (%s) is not in docs/VERIFY.md's tables", code, spec.Names[0].Name)
			}
			return true
		})
	}
	if n < 40 {
		t.Errorf("found %d codes: the test reads the wrong files", n)
	}
}
