package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bulkheadhq/bulkhead/app/archive"
)

func (c *cli) exportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export SLUG --out FILE",
		Short: "Write every row of one tenant to FILE, strategy-neutral and checksummed",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if out == "" {
				return usageError{errors.New("tenant export: --out is required")}
			}
			var arc *archive.Archiver
			return c.with(cmd.Context(), archive.Module, func(ctx context.Context) error {
				// Written beside FILE and renamed into place: a failed
				// export leaves no half-written file.
				tmp, err := os.CreateTemp(filepath.Dir(out), ".bulkhead-export-*")
				if err != nil {
					return err
				}
				defer os.Remove(tmp.Name())
				m, err := arc.Export(ctx, a[0], tmp)
				if err == nil {
					err = tmp.Sync()
				}
				if cerr := tmp.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return notFound(err, "tenant "+a[0])
				}
				if err := os.Rename(tmp.Name(), out); err != nil {
					return err
				}
				return c.print(m, func(w io.Writer) {
					fmt.Fprintf(w, "exported tenant %s to %s:\n", a[0], out)
					for _, t := range m.Tables {
						fmt.Fprintf(w, "  %-20s %8d rows  sha256 %s\n", t.Name, t.Rows, t.SHA256[:16])
					}
				})
			}, &arc)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the file to write")
	return cmd
}

func (c *cli) importCmd() *cobra.Command {
	var slug string
	cmd := &cobra.Command{
		Use:   "import FILE --slug SLUG",
		Short: "Restore an export into a new tenant on the configured strategy, verifying its checksums",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if slug == "" {
				return usageError{errors.New("tenant import: --slug is required")}
			}
			var arc *archive.Archiver
			return c.with(cmd.Context(), archive.Module, func(ctx context.Context) error {
				t, m, err := arc.Import(ctx, a[0], slug)
				if err != nil {
					return err
				}
				return c.print(map[string]any{"tenant": t, "manifest": m}, func(w io.Writer) {
					fmt.Fprintf(w, "imported %s (exported from %s on %s) into tenant %s on %s\n",
						a[0], m.Tenant.Slug, m.SourceIsolation, t.Slug, t.Isolation)
				})
			}, &arc)
		},
	}
	cmd.Flags().StringVar(&slug, "slug", "", "the new tenant's slug")
	return cmd
}
