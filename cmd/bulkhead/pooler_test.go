package main

import (
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
)

// serve behind a transaction-mode PgBouncer that database.pooler does not
// declare refuses to start (exit 2), naming the key and what it saw.
func TestServeRefusesAnUndeclaredPooler(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	code, _, stderr := runCLI(t, []string{
		"BULKHEAD_DATABASE_URL=" + apitest.PgBouncerURL(t, db),
		"BULKHEAD_HTTP_ADDR=127.0.0.1:0",
	}, "serve")
	if code != exitUsage || !strings.Contains(stderr, "database.pooler") || !strings.Contains(stderr, "server session") {
		t.Fatalf("serve through an undeclared PgBouncer: exit %d, want 2 naming database.pooler; stderr: %s", code, stderr)
	}
}
