package isolationtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// ChildEnv marks the child process ExpectLeak starts: it holds the name of
// the test the child is to run for real.
const ChildEnv = "BULKHEAD_ISOLATIONTEST_CHILD"

// IsChild reports whether this process is ExpectLeak's child for t. A test
// meant to fail (a negative control) runs its body only then, and
// otherwise returns at once — the os/exec TestHelperProcess pattern:
//
//	func TestBothWallsRemoved(t *testing.T) {
//		if !isolationtest.IsChild(t) {
//			return // run by TestSuiteCatchesALeak, in a child process
//		}
//		isolationtest.RunAPI(t, isolation.RLS, bypass.Option(), isolationtest.WithoutDatabaseWall())
//	}
func IsChild(t *testing.T) bool { return os.Getenv(ChildEnv) == t.Name() }

// ExpectLeak runs the top-level test called name in a child process of the
// current test binary and fails t unless that test fails with at least one
// leak reported ("LEAK:"). It returns the reported leak lines. The child
// reaches the same PostgreSQL (BULKHEAD_TEST_DATABASE_URL is inherited).
func ExpectLeak(t *testing.T, name string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(name)+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), ChildEnv+"="+name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("%s in a child process: %v, want it to fail; output:\n%s", name, err, out.String())
	}
	var leaks []string
	for _, line := range strings.Split(out.String(), "\n") {
		if i := strings.Index(line, "LEAK: "); i >= 0 {
			leaks = append(leaks, line[i:])
		}
	}
	if len(leaks) == 0 {
		t.Fatalf("%s failed without reporting a leak; output:\n%s", name, out.String())
	}
	if !strings.Contains(out.String(), "--- FAIL: "+name) {
		t.Fatalf("%s did not run in the child process; output:\n%s", name, out.String())
	}
	return leaks
}
