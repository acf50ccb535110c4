package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bulkheadhq/bulkhead/app/config"
)

func (c *cli) configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration and where each value came from, secrets redacted",
		Args:  args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			l, err := config.Load(c.input())
			if err != nil {
				return err
			}
			entries := l.Entries()
			return c.print(entries, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
				for _, e := range entries {
					fmt.Fprintf(tw, "%s\t%v\t%s\n", e.Key, e.Value, e.Source)
				}
				tw.Flush()
			})
		},
	}
}
