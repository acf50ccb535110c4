// Package profiles holds the deployment profiles: small embedded YAML
// documents of configuration defaults (isolation strategy, pool sizes,
// bootstrap tenant, system role) that sit between the built-in defaults and
// the operator's own configuration.
package profiles

import (
	"embed"
	"fmt"
	"slices"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// Default is the profile in force when none is configured.
const Default = "community"

// Names returns the known profile names, sorted.
func Names() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	slices.Sort(names)
	return names
}

// YAML returns the profile's defaults as a YAML document. It returns an error
// naming the known profiles when name is not one of them.
func YAML(name string) ([]byte, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("unknown profile %q (want %s)", name, strings.Join(Names(), ", "))
	}
	return files.ReadFile(name + ".yaml")
}
