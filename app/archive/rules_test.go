package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/archive"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
)

// handMade rewrites the export at path into a new file, passing every row
// line (without its newline) through edit, and recomputes every checksum
// and count: a file made by hand, that no checksum gives away. edit
// returns the lines to write for the line it is given (none drops it).
func handMade(t *testing.T, path string, edit func(table, line string) []string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var manifest struct {
		Manifest map[string]any `json:"manifest"`
	}
	dec := json.NewDecoder(strings.NewReader(lines[len(lines)-1]))
	dec.UseNumber()
	if err := dec.Decode(&manifest); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	all := sha256.New()
	write := func(line string) {
		out.WriteString(line + "\n")
		all.Write([]byte(line + "\n"))
	}
	write(lines[0])
	type sum struct {
		rows int
		h    []byte
	}
	sums := map[string]*sum{}
	hashes := map[string]interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}{}
	for _, line := range lines[1 : len(lines)-1] {
		var rl struct{ Table string }
		if err := json.Unmarshal([]byte(line), &rl); err != nil {
			t.Fatal(err)
		}
		for _, l := range edit(rl.Table, line) {
			var out struct{ Table string }
			if err := json.Unmarshal([]byte(l), &out); err != nil {
				t.Fatal(err)
			}
			if hashes[out.Table] == nil {
				hashes[out.Table], sums[out.Table] = sha256.New(), &sum{}
			}
			hashes[out.Table].Write([]byte(l + "\n"))
			sums[out.Table].rows++
			write(l)
		}
	}
	tables := manifest.Manifest["tables"].([]any)
	listed := map[string]bool{}
	for _, tb := range tables {
		entry := tb.(map[string]any)
		name := entry["name"].(string)
		listed[name] = true
		entry["rows"], entry["sha256"] = 0, hex.EncodeToString(sha256.New().Sum(nil))
		if s := sums[name]; s != nil {
			entry["rows"], entry["sha256"] = s.rows, hex.EncodeToString(hashes[name].Sum(nil))
		}
	}
	for name, s := range sums {
		if !listed[name] {
			tables = append(tables, map[string]any{"name": name, "rows": s.rows, "sha256": hex.EncodeToString(hashes[name].Sum(nil))})
		}
	}
	manifest.Manifest["tables"] = tables
	manifest.Manifest["sha256"] = hex.EncodeToString(all.Sum(nil))
	m, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(append(m, '\n'))
	dst := filepath.Join(t.TempDir(), "hand-made.jsonl")
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// set returns the row line with the row's field key set to the JSON value.
func set(t *testing.T, line, key, value string) string {
	t.Helper()
	var rl struct {
		Table string                     `json:"table"`
		Row   map[string]json.RawMessage `json:"row"`
	}
	if err := json.Unmarshal([]byte(line), &rl); err != nil {
		t.Fatal(err)
	}
	rl.Row[key] = json.RawMessage(value)
	b, err := json.Marshal(rl)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// once applies change to the first row line of table, and keeps the rest.
func once(table string, change func(line string) []string) func(string, string) []string {
	done := false
	return func(tbl, line string) []string {
		if tbl != table || done {
			return []string{line}
		}
		done = true
		return change(line)
	}
}

// A hand-made export with correct checksums goes through the rules the API
// holds what it is sent to, row by row: whatever the API would refuse or
// round is refused, naming the line, and nothing is written — not even the
// tenant.
func TestImportObeysTheAPIsRules(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	fill(t, env, env.Tenant(t, "source"))
	path, _ := export(t, env, "source")

	// The unchanged file, rewritten by the same hand, imports: the
	// rewriting is not what is refused below.
	same := handMade(t, path, func(_, line string) []string { return []string{line} })
	if _, _, err := archive.New(env.Control, env.Strategy).Import(context.Background(), same, "same"); err != nil {
		t.Fatalf("the export, rewritten unchanged: %v", err)
	}

	cases := []struct {
		name   string
		edit   func(table, line string) []string
		detail string // in the error, after the line's number
	}{
		{"an amount that is no exact decimal", once("cost_items", func(l string) []string { return []string{set(t, l, "amount", `"0,1234567"`)} }),
			"cost_items.amount: must be a decimal number such as 12.34"},
		{"a FOCUS cost that is no exact decimal", once("cost_items", func(l string) []string { return []string{set(t, l, "effective_cost", `"12.3.4"`)} }),
			"cost_items.effective_cost: must be an exact decimal such as 12.34"},
		{"tags that are no JSON object", once("cost_items", func(l string) []string { return []string{set(t, l, "tags", `"team=ml"`)} }),
			"cost_items.tags: must be a JSON object"},
		{"a charge period that ends before it starts", once("cost_items", func(l string) []string {
			l = set(t, l, "charge_period_start", `"2026-01-02T00:00:00+00:00"`)
			return []string{set(t, l, "charge_period_end", `"2026-01-01T00:00:00+00:00"`)}
		}), "cost_items.charge_period_end: must not be before charge_period_start"},
		{"a cost column the API does not know", once("cost_items", func(l string) []string { return []string{set(t, l, "x_discount", `"5%"`)} }),
			"cost_items.x_discount: unknown field"},
		{"a budget tag key without a value", once("budgets", func(l string) []string { return []string{set(t, l, "tag_key", `"team"`)} }),
			"budgets.tag_key: tag_key and tag_value go together"},
		{"an import record of a format the server never read", once("cost_imports", func(l string) []string { return []string{set(t, l, "format", `"xlsx"`)} }),
			"cost_imports.format"},
		{"a usage date the API refuses", once("cost_items", func(l string) []string { return []string{set(t, l, "usage_date", `"0001-01-01"`)} }),
			"cost_items.usage_date: must be 1900-01-01 or later"},
		{"an idempotency key that never expires", once("idempotency_keys", func(l string) []string {
			return []string{set(t, l, "created_at", `"2999-01-01T00:00:00+00:00"`)}
		}), "idempotency_keys.created_at: must not be in the future"},
		{"a currency that is none", once("cost_items", func(l string) []string { return []string{set(t, l, "currency", `"XTS"`)} }),
			"cost_items.currency"},
		{"a key given twice", once("accounts", func(l string) []string {
			return []string{strings.Replace(l, `"name":`, `"name":"first","name":`, 1)}
		}), `accounts: duplicate key "name"`},
		{"a tenant_id of the row's own", once("budgets", func(l string) []string {
			return []string{set(t, l, "tenant_id", `"0190a1b2-0000-7000-8000-000000000001"`)}
		}), "budgets.tenant_id"},
		{"a column the API does not know", once("accounts", func(l string) []string { return []string{set(t, l, "owner", `"mallory"`)} }),
			"accounts.owner: unknown field"},
		{"a cost of an account the export lacks", once("cost_items", func(l string) []string {
			return []string{set(t, l, "account_id", `"0190a1b2-0000-7000-8000-0000000000aa"`)}
		}), "cost_items.account_id: no such account in the export"},
		{"two accounts with one id", once("accounts", func(l string) []string { return []string{l, set(t, l, "external_id", `"another"`)} }),
			"accounts.id: another row of accounts has this id"},
		{"a budget that is not positive", once("budgets", func(l string) []string { return []string{set(t, l, "amount", `"-5"`)} }),
			"budgets.amount: must be greater than 0"},
		{"an account name with a NUL", once("accounts", func(l string) []string { return []string{set(t, l, "name", `"a\u0000b"`)} }),
			"accounts.name: must not contain control characters"},
		{"a table the server does not have", once("accounts", func(l string) []string {
			return []string{l, strings.Replace(l, `"table":"accounts"`, `"table":"pg_authid"`, 1)}
		}), "this server imports no table pg_authid"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := handMade(t, path, tc.edit)
			slug := "refused-" + string(rune('a'+i))
			_, _, err := archive.New(env.Control, env.Strategy).Import(context.Background(), bad, slug)
			var rows *archive.RowsError
			if !errors.As(err, &rows) || !strings.Contains(err.Error(), "line ") || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("import said %v, want a refusal naming the line and %q", err, tc.detail)
			}
			var v *store.ValidationError
			if !errors.As(err, &v) || !strings.HasPrefix(v.Field, "line ") {
				t.Errorf("the refusal's first error %v does not start with its line", v)
			}
			if _, err := env.Control.Tenant(context.Background(), slug); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refused import left tenant %s behind (%v)", slug, err)
			}
		})
	}
}
