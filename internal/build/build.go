// Package build says which build of Bulkhead this is: the version and commit
// the Makefile stamps in with -ldflags, else what the Go toolchain recorded
// (the module version for `go install`, the VCS revision for a build in a
// checkout), and the Go version.
package build

import (
	"runtime/debug"
	"sync"
)

// Set with -ldflags "-X github.com/bulkheadhq/bulkhead/internal/build.version=… -X …build.commit=…".
var (
	version string
	commit  string
)

// Info is a build's identity.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	// Modified is true when the checkout had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
}

var read = sync.OnceValue(func() Info {
	i := Info{Version: version, Commit: commit}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		i.GoVersion = bi.GoVersion
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.GoVersion == "" {
		i.GoVersion = "unknown"
	}
	return i
})

// Read returns this build's identity.
func Read() Info { return read() }
