package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/archive"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// strategies are the strategies this build has.
var strategies = []string{isolation.RLS, isolation.Schema, isolation.Database}

// fill gives the tenant a bit of every resource, through the API: accounts
// with awkward names, cost items in two currencies with amounts that a
// float would not carry exactly, an idempotent ingest, and budgets, one
// scoped to an account and a service.
func fill(t *testing.T, env *apitest.Env, tn apitest.Tenant) {
	t.Helper()
	var accounts []string
	for i := range 20 {
		a := env.Must(t, 201, "POST", "/v1/accounts", tn.Editor, map[string]any{
			"provider": []string{"aws", "azure", "gcp"}[i%3], "external_id": fmt.Sprintf("ext-%03d", i), "name": fmt.Sprintf("Account \"%d\" ünïcode", i),
		}).Map(t)
		accounts = append(accounts, a["id"].(string))
	}
	var costs []map[string]any
	for i := range 200 {
		costs = append(costs, map[string]any{
			"account_id": accounts[i%len(accounts)],
			"service":    []string{"EC2", "S3", "Blob \"Storage\"", "BigQuery"}[i%4],
			"usage_date": fmt.Sprintf("2026-%02d-%02d", 1+i%11, 1+i%28),
			"amount":     fmt.Sprintf("%d.%06d", 1000000+i*7919, (i*104729)%1000000),
			"currency":   []string{"USD", "EUR"}[i%2],
		})
	}
	env.Must(t, 201, "POST", "/v1/costs", tn.Editor, costs, "Idempotency-Key", "fill-"+tn.Slug)
	env.Must(t, 201, "POST", "/v1/budgets", tn.Editor, map[string]any{
		"name": "everything", "amount": "12345.678901", "currency": "USD", "period": "monthly",
	})
	env.Must(t, 201, "POST", "/v1/budgets", tn.Editor, map[string]any{
		"name": "one account's storage", "amount": 0.1, "currency": "EUR", "period": "yearly",
		"account_id": accounts[3], "service": "S3",
	})
	// A FOCUS billing export: twelve-decimal amounts, credits, tags, custom
	// columns, two accounts it creates, and the import's record.
	focus, err := os.ReadFile("../finops/testdata/focus/focus-1.2-gcp-oracle.csv")
	if err != nil {
		t.Fatal(err)
	}
	env.Must(t, 201, "POST", "/v1/costs", tn.Editor, focus, "Content-Type", "text/csv")
	env.Must(t, 201, "POST", "/v1/budgets", tn.Editor, map[string]any{
		"name": "ml on gcp", "amount": "0.000000000001", "currency": "USD", "period": "monthly",
		"provider": "gcp", "tag_key": "team", "tag_value": "ml",
	})
}

func export(t *testing.T, env *apitest.Env, slug string) (string, archive.Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := archive.New(env.Control, env.Strategy).Export(context.Background(), slug, &buf)
	if err != nil {
		t.Fatalf("export %s: %v", slug, err)
	}
	path := filepath.Join(t.TempDir(), slug+".jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, m
}

// rowLines are the row lines of an export: what must survive a round trip
// byte for byte.
func rowLines(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[1:len(lines)-1], "\n")
}

func TestRoundTripBetweenStrategies(t *testing.T) {
	t.Parallel()
	for _, from := range strategies {
		for _, to := range strategies {
			t.Run(from+"-to-"+to, func(t *testing.T) {
				t.Parallel()
				src := apitest.Start(t, nil, apitest.WithStrategy(from))
				tn := src.Tenant(t, "source")
				fill(t, src, tn)
				other := src.Tenant(t, "bystander")
				fill(t, src, other)
				path, m := export(t, src, "source")
				rows := map[string]int64{}
				for _, tb := range m.Tables {
					rows[tb.Name] = tb.Rows
				}
				if rows["accounts"] != 22 || rows["cost_items"] != 204 || rows["budgets"] != 3 || rows["cost_imports"] != 1 || m.SourceIsolation != from {
					t.Fatalf("manifest %+v", m)
				}

				dst := apitest.Start(t, src.DB, apitest.WithStrategy(to))
				imported, _, err := archive.New(dst.Control, dst.Strategy).Import(context.Background(), path, "restored")
				if err != nil {
					t.Fatalf("import: %v", err)
				}
				if imported.Isolation != to {
					t.Errorf("imported onto %s, want %s", imported.Isolation, to)
				}
				focusRows(t, path)
				again, m2 := export(t, dst, "restored")
				if got, want := rowLines(t, again), rowLines(t, path); got != want {
					t.Errorf("rows differ after the round trip:\n got %.300s\nwant %.300s", got, want)
				}
				for i := range m.Tables {
					if m.Tables[i] != m2.Tables[i] {
						t.Errorf("table %s: %+v after, %+v before", m.Tables[i].Name, m2.Tables[i], m.Tables[i])
					}
				}
				// The restored tenant is a tenant like any other: its own
				// keys see its rows, the source's keys do not.
				key := dst.Must(t, 201, "POST", "/admin/v1/tenants/restored/keys", apitest.AdminToken, nil).Map(t)["key"].(string)
				var page struct{ Items []map[string]any }
				dst.Must(t, 200, "GET", "/v1/accounts?limit=1000", key, nil).JSON(t, &page)
				if len(page.Items) != 22 {
					t.Errorf("restored tenant lists %d accounts", len(page.Items))
				}
				// The API answers the same FOCUS fields for both.
				var before, after struct{ Items []map[string]any }
				src.Must(t, 200, "GET", "/v1/costs?limit=1000&from=2024-11-01&to=2024-11-30", tn.Viewer, nil).JSON(t, &before)
				dst.Must(t, 200, "GET", "/v1/costs?limit=1000&from=2024-11-01&to=2024-11-30", key, nil).JSON(t, &after)
				if b, a := fmt.Sprint(before.Items), fmt.Sprint(after.Items); len(before.Items) == 0 || a != b {
					t.Errorf("the restored tenant's FOCUS costs differ:\n got %.500s\nwant %.500s", a, b)
				}
			})
		}
	}
}

// focusRows checks that the export at path holds what a FOCUS dataset
// loads — typed FOCUS columns, tags, the dataset's other columns, amounts
// of more than six decimals — so that a round trip of it tests them.
func focusRows(t *testing.T, path string) {
	t.Helper()
	var focus, tags, exact int
	for _, line := range strings.Split(rowLines(t, path), "\n") {
		var rl struct {
			Table string                     `json:"table"`
			Row   map[string]json.RawMessage `json:"row"`
		}
		if err := json.Unmarshal([]byte(line), &rl); err != nil {
			t.Fatal(err)
		}
		if rl.Table != "cost_items" {
			continue
		}
		if string(rl.Row["billing_account_id"]) != "null" && string(rl.Row["charge_period_start"]) != "null" && string(rl.Row["focus"]) != "null" {
			focus++
		}
		if strings.HasPrefix(string(rl.Row["tags"]), "{") {
			tags++
		}
		if _, frac, ok := strings.Cut(string(rl.Row["amount"]), "."); ok && len(frac) > 6 {
			exact++
		}
	}
	if focus == 0 || tags == 0 || exact == 0 {
		t.Fatalf("the export holds %d FOCUS rows, %d with tags, %d amounts of more than six decimals: it tests too little", focus, tags, exact)
	}
}

func TestCorruptExportIsRefused(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	tn := env.Tenant(t, "source")
	fill(t, env, tn)
	path, _ := export(t, env, "source")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	cases := map[string]string{
		"a changed value":  strings.Replace(string(good), "ext-007", "ext-070", 1),
		"a dropped row":    strings.Join(append(append([]string{}, lines[:3]...), lines[4:]...), "\n") + "\n",
		"a truncated file": strings.Join(lines[:len(lines)-1], "\n") + "\n",
		"not an export":    "hello\n",
	}
	for name, body := range cases {
		bad := filepath.Join(t.TempDir(), "bad.jsonl")
		if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := archive.New(env.Control, env.Strategy).Import(context.Background(), bad, "restored")
		var corrupt *archive.CorruptError
		if !errors.As(err, &corrupt) {
			t.Errorf("%s: import said %v, want a corrupt-export error", name, err)
		}
		if _, err := env.Control.Tenant(context.Background(), "restored"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: a refused import left tenant restored behind (%v)", name, err)
		}
	}
}

// A version 1 export — made before FOCUS, at tenant schema version 2 —
// still imports: the columns it lacks are NULL, its amounts exact.
func TestVersion1ExportImports(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t, nil)
	tn := env.Tenant(t, "source")
	fill(t, env, tn)
	path, _ := export(t, env, "source")
	v1 := filepath.Join(t.TempDir(), "v1.jsonl")
	if err := os.WriteFile(v1, asVersion1(t, path), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Verify(bytes.NewReader(asVersion1(t, path))); err != nil {
		t.Fatalf("the rewritten file does not verify: %v", err)
	}
	imported, m, err := archive.New(env.Control, env.Strategy).Import(context.Background(), v1, "restored")
	if err != nil {
		t.Fatalf("import a version 1 file: %v", err)
	}
	if m.TenantVersion != 2 || imported.Slug != "restored" {
		t.Errorf("manifest %+v, tenant %+v", m, imported)
	}
	key := env.Must(t, 201, "POST", "/admin/v1/tenants/restored/keys", apitest.AdminToken, nil).Map(t)["key"].(string)
	var page struct {
		Items []map[string]any `json:"items"`
	}
	env.Must(t, 200, "GET", "/v1/costs?limit=1000&from=2024-11-04&to=2024-11-04", key, nil).JSON(t, &page)
	if len(page.Items) != 1 || page.Items[0]["amount"] != "0.000000000001" || page.Items[0]["focus"] != nil || page.Items[0]["billing_account_id"] != nil {
		t.Errorf("a version 1 row: %v", page.Items)
	}
}

// asVersion1 rewrites a version 2 export as version 1 would have written it:
// without the tenant schema version 3 columns and table, checksums redone.
func asVersion1(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var manifest struct {
		Manifest archive.Manifest `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &manifest); err != nil {
		t.Fatal(err)
	}
	dropped := map[string][]string{
		"cost_items": {"billing_account_id", "billing_period_start", "billing_period_end", "charge_period_start", "charge_period_end",
			"charge_category", "service_category", "region_id", "effective_cost", "list_cost", "contracted_cost", "tags", "focus"},
		"budgets": {"provider", "tag_key", "tag_value"},
	}
	var out bytes.Buffer
	all := sha256.New()
	sums := map[string]hash.Hash{}
	counts := map[string]int64{}
	head := `{"format":"bulkhead-tenant-export","version":1}` + "\n"
	out.WriteString(head)
	all.Write([]byte(head))
	for _, line := range lines[1 : len(lines)-1] {
		var rl struct {
			Table string                     `json:"table"`
			Row   map[string]json.RawMessage `json:"row"`
		}
		if err := json.Unmarshal([]byte(line), &rl); err != nil {
			t.Fatal(err)
		}
		if rl.Table == "cost_imports" {
			continue
		}
		for _, c := range dropped[rl.Table] {
			delete(rl.Row, c)
		}
		nb, err := json.Marshal(rl)
		if err != nil {
			t.Fatal(err)
		}
		nb = append(nb, '\n')
		if sums[rl.Table] == nil {
			sums[rl.Table] = sha256.New()
		}
		sums[rl.Table].Write(nb)
		counts[rl.Table]++
		all.Write(nb)
		out.Write(nb)
	}
	m := manifest.Manifest
	m.TenantVersion = 2
	var tables []archive.TableEntry
	for _, te := range m.Tables {
		if te.Name == "cost_imports" {
			continue
		}
		te.Rows = counts[te.Name]
		if sums[te.Name] != nil {
			te.SHA256 = hex.EncodeToString(sums[te.Name].Sum(nil))
		}
		tables = append(tables, te)
	}
	m.Tables = tables
	m.SHA256 = hex.EncodeToString(all.Sum(nil))
	mb, err := json.Marshal(map[string]any{"manifest": m})
	if err != nil {
		t.Fatal(err)
	}
	out.Write(append(mb, '\n'))
	return out.Bytes()
}
