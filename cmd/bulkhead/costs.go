package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
)

func (c *cli) costsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "costs",
		Short: "Cost data: load billing exports",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("costs: missing subcommand")}
		},
	}
	var (
		tenant, replace string
		noProgress      bool
	)
	imp := &cobra.Command{
		Use:   "import FILE... --tenant SLUG",
		Short: "Load a billing export (FOCUS CSV, gzipped CSV or Parquet) into a tenant, all or nothing, with a progress bar",
		Long: `Load a billing export into a tenant, all or nothing, with a progress bar.

The format is told from each file's first bytes: FOCUS CSV, gzipped CSV or
Parquet. An export delivered in parts (part-00001.csv.gz, ...) loads as one
dataset when its CSV parts are named together: one transaction, and with
--replace one restatement of its billing periods. A Parquet file loads
alone.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if tenant == "" {
				return usageError{errors.New("costs import: --tenant is required")}
			}
			if replace != "" && replace != finops.ReplaceBillingPeriod {
				return usageError{fmt.Errorf("costs import: --replace %q: want %s", replace, finops.ReplaceBillingPeriod)}
			}
			var (
				ctl *control.Service
				svc *finops.Service
				cfg *config.Config
			)
			return c.with(cmd.Context(), finops.Module, func(ctx context.Context) error {
				t, err := ctl.Tenant(ctx, tenant)
				if err != nil {
					return notFound(err, "tenant "+tenant)
				}
				if t.Status != control.StatusActive && t.Status != control.StatusSuspended {
					return fmt.Errorf("tenant %s is %s", tenant, t.Status)
				}
				return c.importCosts(ctx, svc, cfg, t, a, replace, !noProgress)
			}, &ctl, &svc, &cfg)
		},
	}
	imp.Flags().StringVar(&tenant, "tenant", "", "the tenant to load into")
	imp.Flags().StringVar(&replace, "replace", "", "billing_period: the export restates its billing periods, replacing what is stored for them")
	imp.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar (it is drawn only on a terminal anyway)")
	cmd.AddCommand(imp)
	return cmd
}

// importCosts loads the files at paths into t as one dataset: the format
// is told from each file's first bytes, the progress bar runs on standard
// error.
func (c *cli) importCosts(ctx context.Context, svc *finops.Service, cfg *config.Config, t control.Tenant,
	paths []string, replace string, progress bool) error {
	var (
		total   int64
		unit    = "bytes"
		counted = &finops.CountingReader{}
		parts   []io.Reader
		src     finops.FOCUSSource
	)
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return err
		}
		total += info.Size()
		format, r, err := finops.SniffImport(f)
		if err != nil {
			return err
		}
		switch format {
		case "parquet":
			if len(paths) > 1 {
				return usageError{fmt.Errorf("costs import: %s is Parquet: a Parquet file loads alone", path)}
			}
			if src, err = finops.NewParquetSource(f, info.Size()); err != nil {
				return err
			}
			if n, ok := src.(interface{ NumRows() int64 }); ok {
				total, unit = n.NumRows(), "rows"
			}
		case "gzip":
			// Counted as read from the file, compressed: the bar's unit.
			z, err := finops.Gunzip(&finops.CountingReader{R: r, Into: counted}, cfg.Import.MaxBytes)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			parts = append(parts, z)
		default:
			parts = append(parts, &finops.CountingReader{R: r, Into: counted})
		}
	}
	if src == nil {
		var err error
		if src, err = finops.NewCSVSource(finops.LimitReader(io.MultiReader(parts...), cfg.Import.MaxBytes)); err != nil {
			return err
		}
	}
	name := paths[0]
	if len(paths) > 1 {
		name = fmt.Sprintf("%s and %d more", paths[0], len(paths)-1)
	}
	stderrTTY := false
	if fd, ok := c.stderr.(interface{ Fd() uintptr }); ok {
		stderrTTY = isatty.IsTerminal(fd.Fd())
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetVisibility(progress && stderrTTY),
		progressbar.OptionSetDescription("loading "+name),
		progressbar.OptionShowBytes(unit == "bytes"),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	start := time.Now()
	res, err := svc.ImportCosts(ctx, t.Isolated(), src, finops.ImportOptions{
		Replace: replace,
		Record:  true,
		Progress: func(p finops.ImportProgress) {
			if unit == "rows" {
				_ = bar.Set64(p.Rows) // drawing only
			} else {
				_ = bar.Set64(counted.N())
			}
			bar.Describe(fmt.Sprintf("loading %s: %d rows", name, p.Rows))
		},
	})
	_ = bar.Finish() // drawing only
	if err != nil {
		return err
	}
	return c.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "loaded %s into %s in %s: %d rows, %d replaced, %d accounts created (import %s)\n",
			name, t.Slug, time.Since(start).Round(time.Millisecond), res.Inserted, res.Replaced, res.AccountsCreated, res.ID)
	})
}
