package verify

import (
	"context"
	"fmt"
	"strconv"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// fixedIn maps a PostgreSQL major version to the first minor release with
// the fixes of the known RLS vulnerabilities (CVE-2024-10976: policies
// under subqueries ignoring role changes; CVE-2025-8713: optimizer
// statistics leaking rows that policies hide). Majors after 17 shipped
// with them.
var fixedIn = map[int]int{15: 14, 16: 10, 17: 6}

// Server reports a PostgreSQL server older than 15 or below the minor
// release that fixed the known RLS vulnerabilities. Both are warnings: the
// fix is an upgrade the operator schedules, not a reason to stop serving.
func Server(ctx context.Context, q isolation.Querier) ([]Finding, error) {
	var num string
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')`).Scan(&num); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return nil, fmt.Errorf("read server version: %q is not a number", num)
	}
	return VersionFindings(n), nil
}

// VersionFindings returns the findings for a server whose
// server_version_num is num (150014 for 15.14).
func VersionFindings(num int) []Finding {
	major, minor := num/10000, num%10000
	version := fmt.Sprintf("%d.%d", major, minor)
	if major < 10 { // 9.6.24 is 90624
		version = fmt.Sprintf("%d.%d.%d", num/10000, num/100%100, num%100)
	}
	switch want, known := fixedIn[major]; {
	case major < 15:
		return []Finding{finding(CodePostgresUnsupported, warning, "server PostgreSQL "+version,
			"PostgreSQL older than 15 lacks security_invoker views and the fixes of the known RLS vulnerabilities",
			"upgrade to PostgreSQL 15.14, 16.10, 17.6 or later")}
	case known && minor < want:
		return []Finding{finding(CodePostgresOutdated, warning, "server PostgreSQL "+version,
			fmt.Sprintf("PostgreSQL %d before %d.%d has known Row-Level Security vulnerabilities (CVE-2024-10976, CVE-2025-8713)", major, major, want),
			fmt.Sprintf("upgrade to PostgreSQL %d.%d or later", major, want))}
	}
	return nil
}
