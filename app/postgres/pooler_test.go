package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// DetectPooler sees PgBouncer's transaction pooling, and sees none on a
// direct connection, whatever exec mode the configuration asks for.
func TestDetectPooler(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	for _, c := range []struct {
		name, dsn string
		pooled    bool
	}{
		{"direct", db.AppURL, false},
		{"PgBouncer", apitest.PgBouncerURL(t, db), true},
	} {
		for _, pooler := range []string{"none", "pgbouncer"} {
			cfg, err := pgx.ParseConfig(c.dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = postgres.ExecMode(pooler)
			seen, err := postgres.DetectPooler(context.Background(), cfg)
			if err != nil {
				t.Fatalf("%s (exec mode for %s): %v", c.name, pooler, err)
			}
			if seen.Pooled != c.pooled || seen.Evidence == "" {
				t.Errorf("%s (exec mode for %s): %+v, want pooled %v", c.name, pooler, seen, c.pooled)
			}
		}
	}
}

// BenchmarkDetectPooler measures what the pooler check adds to serve's
// start, directly and through PgBouncer.
func BenchmarkDetectPooler(b *testing.B) {
	db := pgtest.New(b)
	for _, c := range []struct{ name, dsn string }{{"direct", db.AppURL}, {"pgbouncer", apitest.PgBouncerURL(b, db)}} {
		cfg, err := pgx.ParseConfig(c.dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := postgres.DetectPooler(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
