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
		Use:   "import FILE --tenant SLUG",
		Short: "Load a billing export (FOCUS CSV, gzipped CSV or Parquet) into a tenant, all or nothing, with a progress bar",
		Args:  args(cobra.ExactArgs(1)),
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
				return c.importCosts(ctx, svc, cfg, t, a[0], replace, !noProgress)
			}, &ctl, &svc, &cfg)
		},
	}
	imp.Flags().StringVar(&tenant, "tenant", "", "the tenant to load into")
	imp.Flags().StringVar(&replace, "replace", "", "billing_period: the export restates its billing periods, replacing what is stored for them")
	imp.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar (it is drawn only on a terminal anyway)")
	cmd.AddCommand(imp)
	return cmd
}

// importCosts loads the file at path into t: the format is told from the
// file's first bytes, the progress bar runs on standard error.
func (c *cli) importCosts(ctx context.Context, svc *finops.Service, cfg *config.Config, t control.Tenant,
	path, replace string, progress bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	counted := &finops.CountingReader{R: f}
	format, r, err := finops.SniffImport(counted)
	if err != nil {
		return err
	}
	var (
		src   finops.FOCUSSource
		total = info.Size()
		unit  = "bytes"
	)
	switch format {
	case "parquet":
		if src, err = finops.NewParquetSource(f, info.Size()); err != nil {
			return err
		}
		if n, ok := src.(interface{ NumRows() int64 }); ok {
			total, unit = n.NumRows(), "rows"
		}
	case "gzip":
		z, err := finops.Gunzip(r, cfg.Import.MaxBytes)
		if err != nil {
			return err
		}
		if src, err = finops.NewCSVSource(z); err != nil {
			return err
		}
	default:
		if info.Size() > cfg.Import.MaxBytes {
			return &finops.TooLargeError{Limit: cfg.Import.MaxBytes}
		}
		if src, err = finops.NewCSVSource(r); err != nil {
			return err
		}
	}
	stderrTTY := false
	if fd, ok := c.stderr.(interface{ Fd() uintptr }); ok {
		stderrTTY = isatty.IsTerminal(fd.Fd())
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetVisibility(progress && stderrTTY),
		progressbar.OptionSetDescription("loading "+path),
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
			bar.Describe(fmt.Sprintf("loading %s: %d rows", path, p.Rows))
		},
	})
	_ = bar.Finish() // drawing only
	if err != nil {
		return err
	}
	return c.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "loaded %s into %s in %s: %d rows, %d replaced, %d accounts created (import %s)\n",
			path, t.Slug, time.Since(start).Round(time.Millisecond), res.Inserted, res.Replaced, res.AccountsCreated, res.ID)
	})
}
