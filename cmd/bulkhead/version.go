package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/bulkheadhq/bulkhead/internal/build"
)

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this build",
		Args:  args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			i := build.Read()
			return c.print(i, func(w io.Writer) {
				dirty := ""
				if i.Modified {
					dirty = " (modified)"
				}
				fmt.Fprintf(w, "bulkhead %s\ncommit %s%s\n%s\n", i.Version, i.Commit, dirty, i.GoVersion)
			})
		},
	}
}
