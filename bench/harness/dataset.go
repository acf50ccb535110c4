package harness

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// services are the service names of the generated cost items. budgetService
// is the one the second budget of every tenant is scoped to.
var services = []string{
	"AmazonEC2", "AmazonS3", "AmazonRDS", "AWSLambda", "AmazonCloudFront",
	"AmazonDynamoDB", "AmazonEKS", "AmazonCloudWatch", "AWSDataTransfer", "AmazonElastiCache",
	"VirtualMachines", "StorageAccounts", "AzureSQL", "AzureFunctions", "AzureMonitor",
	"ComputeEngine", "CloudStorage", "BigQuery", "CloudSQL", "CloudRun",
}

const budgetService = "AmazonEC2"

// historyDays is how far back the generated cost items go.
const historyDays = 365

// tenantSpec is one tenant of the data set. Every strategy gets the same
// tenants, told apart by Index; ids of accounts and budgets derive from the
// index, so they are the same on every strategy and the load generator
// needs no lookups.
type tenantSpec struct {
	Index    int
	Slug     string
	Large    bool
	Rows     int // cost items
	Accounts int
}

// dataset is the tenants and what was derived from them.
type dataset struct {
	Tenants []tenantSpec
	Large   []int // indexes of the large tenants
	Small   []int // and of the others
	Rows    int64 // cost items in all
	// Today is the last usage date of the generated items (UTC midnight).
	Today time.Time
}

// newDataset draws the tenants: the first large ones with largeRows cost
// items each, the rest with an exponentially distributed count of mean
// smallRows (so most are small and a few are several times the mean), the
// same for every run with the same seed.
func newDataset(cfg Config) *dataset {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	d := &dataset{Today: time.Now().UTC().Truncate(24 * time.Hour)}
	for i := range cfg.Tenants {
		t := tenantSpec{Index: i, Slug: fmt.Sprintf("tenant-%04d", i)}
		if i < cfg.Large {
			t.Large, t.Rows, t.Accounts = true, cfg.LargeRows, 20
			d.Large = append(d.Large, i)
		} else {
			t.Rows = int(math.Round(r.ExpFloat64() * float64(cfg.SmallRows)))
			t.Rows = min(max(t.Rows, 10), 20*max(cfg.SmallRows, 1))
			t.Accounts = min(2+t.Rows/500, 10)
			d.Small = append(d.Small, i)
		}
		d.Tenants = append(d.Tenants, t)
		d.Rows += int64(t.Rows)
	}
	return d
}

// accountID is the id of account k (1-based) of tenant i.
func accountID(i, k int) uuid.UUID { return uuid.UUID(md5.Sum(fmt.Appendf(nil, "acct-%d-%d", i, k))) }

// budgetID is the id of budget k (1 or 2) of tenant i.
func budgetID(i, k int) uuid.UUID { return uuid.UUID(md5.Sum(fmt.Appendf(nil, "budget-%d-%d", i, k))) }

// The generating statements. They take arrays of tenants, so one statement
// loads many tenants of the shared tables; md5(text)::uuid matches
// accountID and budgetID. Cost item ids are time-ordered like the UUIDv7
// the server makes (a millisecond timestamp first), and rows are generated
// in (usage_date, id) order, so every index is filled from left to right.
// Each statement names its table with %s: "public." or a tenant schema.
const (
	genAccounts = `
INSERT INTO %[1]saccounts (tenant_id, id, provider, external_id, name)
SELECT t.id, md5('acct-' || t.idx || '-' || k)::uuid, (ARRAY['aws', 'azure', 'gcp'])[1 + k %% 3],
       'ext-' || t.idx || '-' || k, 'Account ' || k
FROM unnest($1::uuid[], $2::int[], $3::int[]) AS t (id, idx, accounts), generate_series(1, t.accounts) AS k`

	genCosts = `
INSERT INTO %[1]scost_items (tenant_id, id, account_id, service, usage_date, amount, currency, created_at)
SELECT t.id,
       (lpad(to_hex($5::bigint + g), 12, '0') || '7' || lpad(to_hex(g %% 4096), 3, '0') || '8'
        || lpad(to_hex(t.idx %% 4096), 3, '0') || lpad(to_hex(g), 12, '0'))::uuid,
       md5('acct-' || t.idx || '-' || (1 + g %% t.accounts))::uuid,
       ($6::text[])[1 + (g * 7 + t.idx) %% 20],
       $7::date - ((t.rows - g)::bigint * %[2]d / t.rows)::int,
       ((g * 7919 + t.idx * 104729) %% 100000)::numeric / 100,
       'USD', $8::timestamptz
FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[]) AS t (id, idx, accounts, rows), generate_series(1, t.rows) AS g`

	genBudgets = `
INSERT INTO %[1]sbudgets (tenant_id, id, name, amount, currency, period, service)
SELECT t.id, md5('budget-' || t.idx || '-' || b.k)::uuid, b.name, b.amount, 'USD', 'monthly', b.service
FROM unnest($1::uuid[], $2::int[]) AS t (id, idx),
     (VALUES (1, 'Monthly total', 1000000::numeric, NULL::text), (2, 'EC2 monthly', 200000, $3)) AS b (k, name, amount, service)`
)

// placed is a tenant of the data set as one strategy provisioned it.
type placed struct {
	spec tenantSpec
	id   uuid.UUID
	iso  isolation.Tenant // as the strategy binds it
}

// load generates the accounts, cost items and budgets of tenants into the
// tables of schema (quoted here), as a role that bypasses Row-Level
// Security: the loader is not the product under test.
func (d *dataset) load(ctx context.Context, conn *pgx.Conn, schema string, tenants []placed) error {
	n := len(tenants)
	ids, idx, accts, rows := make([]uuid.UUID, n), make([]int32, n), make([]int32, n), make([]int32, n)
	for j, t := range tenants {
		ids[j], idx[j], accts[j], rows[j] = t.id, int32(t.spec.Index), int32(t.spec.Accounts), int32(t.spec.Rows)
	}
	prefix := pgx.Identifier{schema}.Sanitize() + "."
	// Ids as of a year ago: older than anything the server makes.
	base := d.Today.AddDate(0, 0, -historyDays).UnixMilli()
	created := d.Today.Add(-time.Hour)
	batch := &pgx.Batch{}
	batch.Queue(fmt.Sprintf(genAccounts, prefix), ids, idx, accts)
	batch.Queue(fmt.Sprintf(genCosts, prefix, historyDays), ids, idx, accts, rows, base, services, d.Today, created)
	batch.Queue(fmt.Sprintf(genBudgets, prefix), ids, idx, budgetService)
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("load %d tenants into %s: %w", n, schema, err)
	}
	return nil
}

// ingestBody is a JSON array of n cost items of tenant t, dated within the
// last four weeks (so they count towards the budgets' current period).
func (d *dataset) ingestBody(t tenantSpec, n int) []byte {
	type item struct {
		AccountID string `json:"account_id"`
		Service   string `json:"service"`
		UsageDate string `json:"usage_date"`
		Amount    string `json:"amount"`
		Currency  string `json:"currency"`
	}
	items := make([]item, n)
	for j := range items {
		items[j] = item{
			AccountID: accountID(t.Index, 1+j%t.Accounts).String(),
			Service:   services[(j*3+t.Index)%len(services)],
			UsageDate: d.Today.AddDate(0, 0, -(j % 28)).Format(time.DateOnly),
			Amount:    fmt.Sprintf("%d.%02d", j%500, j%100),
			Currency:  "USD",
		}
	}
	b, err := json.Marshal(items)
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return b
}

// month returns the first and last day of the calendar month k months
// before Today's.
func (d *dataset) month(k int) (string, string) {
	first := time.Date(d.Today.Year(), d.Today.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -k, 0)
	return first.Format(time.DateOnly), first.AddDate(0, 1, -1).Format(time.DateOnly)
}

// describe is a one-line summary of the data set.
func (d *dataset) describe() string {
	var large int64
	for _, i := range d.Large {
		large += int64(d.Tenants[i].Rows)
	}
	return fmt.Sprintf("%d tenants (%d large), %d cost items (%d in the large tenants)",
		len(d.Tenants), len(d.Large), d.Rows, large)
}
