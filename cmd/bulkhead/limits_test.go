package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

func TestTenantLimitsCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL}
	limits := func(args ...string) (overrides, effective map[string]any) {
		t.Helper()
		code, out, stderr := runCLI(t, env, append([]string{"tenant", "limits", "acme", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("tenant limits %v: exit %d: %s", args, code, stderr)
		}
		var l struct {
			Overrides, Effective map[string]any
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return l.Overrides, l.Effective
	}
	if code, _, stderr := runCLI(t, env, "tenant", "create", "acme"); code != 0 {
		t.Fatalf("tenant create: %s", stderr)
	}
	o, e := limits()
	if o["max_concurrent"] != nil || o["rate"] != nil || e["max_concurrent"] != 8.0 || e["rate"] != 100.0 || e["burst"] != 200.0 {
		t.Errorf("defaults: overrides %v, effective %v", o, e)
	}
	o, e = limits("--max-concurrent", "3", "--rate", "5.5")
	if o["max_concurrent"] != 3.0 || o["rate"] != 5.5 || o["burst"] != nil || e["burst"] != 200.0 {
		t.Errorf("after setting two: overrides %v, effective %v", o, e)
	}
	o, _ = limits("--burst", "7", "--max-concurrent", "0")
	if o["max_concurrent"] != nil || o["rate"] != 5.5 || o["burst"] != 7.0 {
		t.Errorf("after setting burst and resetting max-concurrent: %v", o)
	}
	if o, _ = limits("--reset"); o["rate"] != nil || o["burst"] != nil {
		t.Errorf("after --reset: %v", o)
	}
	for _, args := range [][]string{
		{"tenant", "limits", "acme", "--max-concurrent", "-1"},
		{"tenant", "limits", "acme", "--max-concurrent", "20000"},
		{"tenant", "limits", "acme", "--reset", "--burst", "3"},
		{"tenant", "stats", "--by", "fame"},
		{"tenant", "stats", "--limit", "0"},
	} {
		if code, _, stderr := runCLI(t, env, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI(t, env, "tenant", "limits", "nobody"); code != exitFailure || !strings.Contains(stderr, "not found") {
		t.Errorf("limits of a tenant that does not exist: exit %d: %s", code, stderr)
	}
	code, out, _ := runCLI(t, env, "audit", "list", "-o", "json")
	if code != 0 || strings.Count(out, `"tenant.limits"`) != 3 {
		t.Errorf("audit list: exit %d, want 3 tenant.limits entries: %s", code, out)
	}
}

// tenant stats reads what serving processes recorded, added up over them,
// ranked by the measure asked.
func TestTenantStatsCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := []string{"BULKHEAD_DATABASE_URL=" + db.AppURL, "BULKHEAD_MIGRATE_DATABASE_URL=" + db.MigrateURL}
	var ids = map[string]uuid.UUID{}
	for _, slug := range []string{"busy", "slow"} {
		code, out, stderr := runCLI(t, env, "tenant", "create", slug, "-o", "json")
		if code != 0 {
			t.Fatalf("tenant create: %s", stderr)
		}
		var tn struct{ ID uuid.UUID }
		json.Unmarshal([]byte(out), &tn)
		ids[slug] = tn.ID
	}
	// Two serving processes record their minutes, as the serving role may.
	conn, err := pgx.Connect(t.Context(), db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	minute := time.Now().UTC().Truncate(time.Minute)
	for _, replica := range []string{"pod-a", "pod-b"} {
		_, err := conn.Exec(t.Context(), `SELECT bulkhead.record_tenant_usage($1, $2, '1 hour', $3, $4, $5, $6, $7, $8)`,
			minute, replica, []uuid.UUID{ids["busy"], ids["slow"], uuid.Nil},
			[]int64{100, 3, 7}, []int64{10, 0, 0}, []int64{5, 1, 0}, []int64{1000, 10, 0}, []int64{2_000_000, 9_000_000, 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The serving role can add counters, not rewrite the control plane.
	if _, err := conn.Exec(t.Context(), `DELETE FROM bulkhead.tenant_usage`); err == nil {
		t.Error("the serving role may delete usage rows directly")
	}
	stats := func(args ...string) []map[string]any {
		t.Helper()
		code, out, stderr := runCLI(t, env, append([]string{"tenant", "stats", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("tenant stats: exit %d: %s", code, stderr)
		}
		var st struct{ Items []map[string]any }
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return st.Items
	}
	items := stats()
	if len(items) != 3 || items[0]["tenant"] != "busy" || items[0]["requests"] != 200.0 || items[0]["rejections"] != 20.0 ||
		items[1]["tenant"] != "(others)" || items[2]["tenant"] != "slow" {
		t.Errorf("by requests: %v", items)
	}
	if items = stats("--by", "db_time", "--limit", "1"); len(items) != 1 || items[0]["tenant"] != "slow" || items[0]["db_seconds"] != 18.0 {
		t.Errorf("by database time: %v", items)
	}
	if code, out, _ := runCLI(t, env, "tenant", "stats"); code != 0 || !strings.Contains(out, "busy") || !strings.Contains(out, "REQUESTS") {
		t.Errorf("text: exit %d:\n%s", code, out)
	}
}
