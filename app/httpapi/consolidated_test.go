package httpapi_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/isolation"
)

type consolidated struct {
	Items []struct {
		Key, Amount, Currency string
		Shares                []struct{ Tenant, Amount string }
	}
	Tenants []struct {
		Tenant string
		Totals []struct{ Amount, Currency string }
	}
}

// seedCosts gives the tenant an account and n random cost items in two
// currencies.
func seedCosts(t *testing.T, env *apitest.Env, tn apitest.Tenant, n int, r *rand.Rand) {
	t.Helper()
	acct := env.Must(t, 201, "POST", "/v1/accounts", tn.Editor, account(1)).Map(t)["id"]
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{
			"account_id": acct,
			"service":    []string{"compute", "storage", "network"}[r.IntN(3)],
			"usage_date": fmt.Sprintf("2026-10-%02d", 1+r.IntN(28)),
			"amount":     fmt.Sprintf("%d.%06d", r.IntN(1000), r.IntN(1_000_000)),
			"currency":   []string{"USD", "EUR"}[r.IntN(2)],
		}
	}
	env.Must(t, 201, "POST", "/v1/costs", tn.Editor, items)
}

func TestConsolidatedSummary(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{isolation.RLS, isolation.Schema, isolation.Database} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			env := apitest.Start(t, nil, apitest.WithStrategy(strategy))
			r := rand.New(rand.NewPCG(1, 2))
			parent, subA, subB := env.Tenant(t, "parent"), env.Tenant(t, "sub-a"), env.Tenant(t, "sub-b")
			for _, tn := range []apitest.Tenant{parent, subA, subB} {
				seedCosts(t, env, tn, 200, r)
			}
			keyID := func(key string) string { return key[3:19] }
			q := "/v1/consolidated/costs/summary?from=2026-10-01&to=2026-10-31&group_by=service&tenants="

			// Ungranted tenants are not found, like tenants that do not exist.
			notGranted := env.Must(t, 404, "GET", q+"parent,sub-a", parent.Viewer, nil).Map(t)
			missing := env.Must(t, 404, "GET", q+"parent,nobody", parent.Viewer, nil).Map(t)
			if notGranted["title"] != missing["title"] {
				t.Errorf("an ungranted tenant answers %v, a missing one %v", notGranted, missing)
			}

			env.Must(t, 204, "POST", "/admin/v1/keys/"+keyID(parent.Viewer)+"/grants", apitest.AdminToken, map[string]any{"tenant": "sub-a"})
			var got consolidated
			env.Must(t, 200, "GET", q+"parent,sub-a", parent.Viewer, nil).JSON(t, &got)

			// Exactly the sum of each tenant's own summary, per key and currency.
			want := map[string]decimal.Decimal{}
			shares := map[string]decimal.Decimal{}
			for _, tn := range []apitest.Tenant{parent, subA} {
				var own struct {
					Items []struct{ Key, Amount, Currency string }
				}
				env.Must(t, 200, "GET", "/v1/costs/summary?from=2026-10-01&to=2026-10-31&group_by=service", tn.Viewer, nil).JSON(t, &own)
				for _, it := range own.Items {
					k := it.Key + "/" + it.Currency
					want[k] = want[k].Add(decimal.RequireFromString(it.Amount))
					shares[k+"/"+tn.Slug] = decimal.RequireFromString(it.Amount)
				}
			}
			if len(got.Items) != len(want) {
				t.Fatalf("%d consolidated items, want %d: %+v", len(got.Items), len(want), got)
			}
			for _, it := range got.Items {
				k := it.Key + "/" + it.Currency
				if !decimal.RequireFromString(it.Amount).Equal(want[k]) {
					t.Errorf("%s: %s, want %s", k, it.Amount, want[k])
				}
				for _, s := range it.Shares {
					if s.Tenant == "sub-b" || !decimal.RequireFromString(s.Amount).Equal(shares[k+"/"+s.Tenant]) {
						t.Errorf("%s: share %+v", k, s)
					}
				}
			}
			if len(got.Tenants) != 2 || got.Tenants[0].Tenant != "parent" || got.Tenants[1].Tenant != "sub-a" {
				t.Errorf("tenants %+v", got.Tenants)
			}
			// The grant is read only, and only for that tenant.
			env.Must(t, 404, "GET", q+"sub-b", parent.Viewer, nil)
			// Withdrawing the grant takes effect on the next request.
			env.Must(t, 204, "DELETE", "/admin/v1/keys/"+keyID(parent.Viewer)+"/grants/sub-a", apitest.AdminToken, nil)
			env.Must(t, 404, "GET", q+"sub-a", parent.Viewer, nil)
			env.Must(t, 200, "GET", q+"parent", parent.Viewer, nil)
		})
	}
}
