package isolation

import (
	"fmt"
	"strings"
)

// Severity of a Finding. Critical findings make serve refuse to start.
const (
	Critical = "critical"
	Warning  = "warning"
)

// Finding is one way the live database breaks an isolation invariant:
// what `bulkhead verify` prints, and what a strategy's Verify returns.
// docs/VERIFY.md lists every code with the flaw that triggers it.
type Finding struct {
	// Code is stable: scripts and tests match on it.
	Code     string `json:"code"`
	Severity string `json:"severity"`
	// Object names what the finding concerns: a role, table, view, ...
	Object string `json:"object"`
	Detail string `json:"detail"`
	// Fix is one line saying how to mend it.
	Fix string `json:"fix"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s [%s] %s: %s (fix: %s)", f.Code, f.Severity, f.Object, f.Detail, f.Fix)
}

// UnsafeError is returned when the serving role could bypass isolation; the
// server refuses to start on it.
type UnsafeError struct{ Findings []Finding }

func (e *UnsafeError) Error() string {
	parts := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		parts[i] = f.String()
	}
	return "refusing to serve: " + strings.Join(parts, "; ")
}

// CriticalOf returns the critical findings of fs.
func CriticalOf(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == Critical {
			out = append(out, f)
		}
	}
	return out
}
