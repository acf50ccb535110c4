package finops

import (
	"encoding/json"
	"fmt"
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
	// A row a FOCUS dataset loaded keeps every column, its amounts
	// exactly as written, however many decimals.
	focus := `{"id":"0190a1b2-0000-7000-8000-000000000005","account_id":"0190a1b2-0000-7000-8000-000000000001",
		"service":"Compute Engine","usage_date":"2026-01-03","amount":0.00000080000,"currency":"USD","created_at":"2026-01-03T00:00:00Z",
		"billing_account_id":"0123-4567","billing_period_start":"2026-01-01T00:00:00+00:00","billing_period_end":"2026-02-01T00:00:00+00:00",
		"charge_period_start":"2026-01-03T00:00:00+00:00","charge_period_end":"2026-01-04T00:00:00+00:00","charge_category":"Usage",
		"service_category":"Compute","region_id":"europe-west1","effective_cost":-0.123456789012,"list_cost":1E+2,"contracted_cost":null,
		"tags":{"team":"ml","env":"<prod>"},"focus":{"x_Custom":"a","SkuId":"1"}}`
	got, err = r.Row("line 4", "cost_items", json.RawMessage(focus))
	if err != nil {
		t.Fatal(err)
	}
	var frow map[string]json.RawMessage
	if err := json.Unmarshal(got, &frow); err != nil {
		t.Fatal(err)
	}
	for col, want := range map[string]string{
		"amount": `"0.00000080000"`, "effective_cost": `"-0.123456789012"`, "list_cost": `"1E+2"`, "contracted_cost": `null`,
		"billing_account_id": `"0123-4567"`, "billing_period_start": `"2026-01-01T00:00:00Z"`, "charge_period_end": `"2026-01-04T00:00:00Z"`,
		"charge_category": `"Usage"`, "service_category": `"Compute"`, "region_id": `"europe-west1"`,
		"tags": `{"team":"ml","env":"\u003cprod\u003e"}`, "focus": `{"x_Custom":"a","SkuId":"1"}`,
	} {
		if string(frow[col]) != want {
			t.Errorf("restored %s = %s, want %s", col, frow[col], want)
		}
	}
	// An import still running when the tenant was exported did not
	// finish, here or there.
	got, err = r.Row("line 5", "cost_imports", json.RawMessage(`{"id":"0190a1b2-0000-7000-8000-000000000006","status":"running","format":"parquet",
		"replace":"billing_period","rows_done":10,"bytes_done":1000,"inserted":null,"replaced":null,"accounts_created":null,"error":null,
		"started_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:01:00Z","finished_at":null}`))
	if err != nil {
		t.Fatal(err)
	}
	var imp map[string]any
	if err := json.Unmarshal(got, &imp); err != nil {
		t.Fatal(err)
	}
	if imp["status"] != "failed" || imp["finished_at"] != "2026-01-01T00:01:00Z" || !strings.HasPrefix(fmt.Sprint(imp["error"]), "interrupted") || imp["rows_done"] != 10.0 {
		t.Errorf("a running import restored as %s", got)
	}
	for _, c := range []struct{ table, row, want string }{
		{"cost_items", strings.Replace(cost, `1.500000`, `"1,5"`, 1), "line 9: cost_items.amount: must be a decimal number such as 12.34"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"effective_cost":"1.5e100"`, 1), "line 9: cost_items.effective_cost: must be an exact decimal such as 12.34"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"tags":["team"]`, 1), "line 9: cost_items.tags: must be a JSON object"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"focus":"{}"`, 1), "line 9: cost_items.focus: must be a JSON object"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"charge_period_start":"2026-01-03T00:00:00Z","charge_period_end":"2026-01-02T00:00:00Z"`, 1),
			"line 9: cost_items.charge_period_end: must not be before charge_period_start"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"billing_period_start":"January"`, 1), "line 9: cost_items.billing_period_start: must be a time written as in RFC 3339"},
		{"cost_items", strings.Replace(cost, `"region":null`, `"region_id":"a\u0000b"`, 1), "line 9: cost_items.region_id: must not contain NUL"},
		// A FOCUS column is checked even when one of the five is bad.
		{"cost_items", strings.Replace(strings.Replace(cost, `"usd"`, `"XTS"`, 1), `"region":null`, `"list_cost":true`, 1), "line 9: cost_items.list_cost: must be an exact decimal"},
		{"budgets", `{"id":"0190a1b2-0000-7000-8000-000000000003","name":"b","amount":"1","currency":"USD","period":"monthly",
			"account_id":null,"service":null,"provider":null,"tag_key":"team","tag_value":null,
			"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`, "line 9: budgets.tag_key: tag_key and tag_value go together"},
		{"cost_imports", `{"id":"0190a1b2-0000-7000-8000-000000000004","status":"done","format":"csv","replace":null,"rows_done":1,"bytes_done":10,
			"inserted":1,"replaced":null,"accounts_created":0,"error":null,"started_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z",
			"finished_at":"2026-01-01T00:00:00Z"}`, "line 9: cost_imports.status: must be one of"},
		{"cost_imports", `{"id":"0190a1b2-0000-7000-8000-000000000004","status":"succeeded","format":"xlsx","replace":"all","rows_done":-1,"bytes_done":10,
			"inserted":1.5,"replaced":null,"accounts_created":0,"error":null,"started_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z",
			"finished_at":"2025-01-01T00:00:00Z"}`, "line 9: cost_imports.inserted: must be a whole number, 0 or more"},
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
