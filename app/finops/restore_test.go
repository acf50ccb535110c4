package finops

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Restore gives back a row as the API would have stored it, and refuses
// what the API refuses, with the API's own words, under the row's place.
func TestRestoreHoldsRowsToTheAPIsRules(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	r := NewRestore(now)
	account := `{"id":"0190a1b2-0000-7000-8000-000000000001","provider":"aws","external_id":"1","name":"one",
		"created_at":"2026-01-01T00:00:00+00:00","updated_at":"2026-01-02T00:00:00+00:00"}`
	if _, err := r.Row("line 2", "accounts", json.RawMessage(account)); err != nil {
		t.Fatal(err)
	}
	cost := `{"id":"0190a1b2-0000-7000-8000-000000000002","account_id":"0190a1b2-0000-7000-8000-000000000001",
		"service":" EC2 ","usage_date":"2026-01-03","amount":1.500000,"currency":"usd","created_at":"2026-01-03T00:00:00Z","region":null}`
	got, err := r.Row("line 3", "cost_items", json.RawMessage(cost))
	if err != nil {
		t.Fatal(err)
	}
	var row map[string]any
	if err := json.Unmarshal(got, &row); err != nil {
		t.Fatal(err)
	}
	if row["service"] != "EC2" || row["currency"] != "USD" || row["amount"] != "1.500000" || row["usage_date"] != "2026-01-03" {
		t.Errorf("restored %s", got)
	}
	if _, ok := row["region"]; ok {
		t.Errorf("a null column the API does not know was kept: %s", got)
	}
	for _, c := range []struct{ table, row, want string }{
		{"cost_items", strings.Replace(cost, `1.500000`, `"0.1234567"`, 1), "line 9: cost_items.amount: must have at most 6 decimal places"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"region":"eu"`, 1), "line 9: cost_items.region: unknown field"},
		{"accounts", strings.Replace(account, `"updated_at":"2026-01-02T00:00:00+00:00"`, `"updated_at":"2025-12-31T00:00:00Z"`, 1), "line 9: accounts.updated_at: must not be before created_at"},
		{"idempotency_keys", `{"key":"k","operation":"ingest-costs","fingerprint":"\\x` + strings.Repeat("ab", 32) + `","result":{"inserted":1},"created_at":"2999-01-01T00:00:00Z"}`,
			"line 9: idempotency_keys.created_at: must not be in the future"},
		{"idempotency_keys", `{"key":"k","operation":"drop-tables","fingerprint":"\\xab","result":{"inserted":-1},"created_at":"2026-01-01T00:00:00Z"}`,
			"line 9: idempotency_keys.operation"},
	} {
		if _, err := NewRestore(now).Row("line 9", c.table, json.RawMessage(c.row)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.row, err, c.want)
		}
	}
	if err := r.Done(); err != nil {
		t.Errorf("every account referenced is in the export: %v", err)
	}
}
