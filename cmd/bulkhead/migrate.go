package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
)

func (c *cli) migrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create missing roles, migrate the control plane and every tenant",
		Long: `Create the roles Bulkhead needs where the migrate DSN may (or name the
missing ones), migrate the control plane, and migrate every tenant that is
behind: in parallel, continuing past failures, each tenant's version and
error recorded. Exits 1 if any tenant failed; a re-run picks up what is
behind.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				svc *control.Service
				cfg *config.Config
				log *slog.Logger
			)
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if err := cfg.RequireMigrate(); err != nil {
					return err
				}
				report, err := svc.Migrate(ctx, func(done, total, failed int) {
					log.Info("migrating tenants", "done", done, "total", total, "failed", failed)
				})
				if report.ControlHead == 0 && err != nil {
					return err
				}
				if perr := c.printReport(report); perr != nil {
					return perr
				}
				if errors.Is(err, control.ErrMigrationFailed) {
					return reportedError{err, exitFailure}
				}
				return err
			}, &svc, &cfg, &log)
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show each tenant's migration version and state",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				report, err := svc.MigrateStatus(ctx)
				if err != nil {
					return err
				}
				return c.printReport(report)
			}, &svc)
		},
	})
	return cmd
}

func (c *cli) printReport(r control.MigrationReport) error {
	return c.print(r, func(w io.Writer) {
		fmt.Fprintf(w, "control plane: version %d of %d\n", r.ControlVersion, r.ControlHead)
		fmt.Fprintf(w, "tenants: %d, head %d, %d failed\n", len(r.Tenants), r.TenantHead, r.Failed)
		if len(r.Tenants) == 0 {
			return
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tVERSION\tSTATE\tERROR")
		for _, t := range r.Tenants {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", t.Tenant, t.Version, t.State, t.Error)
		}
		tw.Flush()
	})
}
