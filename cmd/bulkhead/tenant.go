package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/control"
)

func (c *cli) tenantCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Tenant lifecycle: create, list, show, suspend, resume, delete; limits and stats",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("tenant: missing subcommand")}
		},
	}
	var name string
	create := &cobra.Command{
		Use:   "create SLUG",
		Short: "Provision a tenant with the configured isolation strategy",
		Args:  args(cobra.ExactArgs(1)),
		RunE: c.tenantOp(func(svc *control.Service, ctx context.Context, slug string) (control.Tenant, error) {
			return svc.CreateTenant(ctx, slug, name)
		}),
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the slug)")
	cmd.AddCommand(
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List every tenant",
			Args:  args(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error {
				var svc *control.Service
				return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
					list, err := svc.Tenants(ctx)
					if err != nil {
						return err
					}
					if list == nil {
						list = []control.Tenant{}
					}
					return c.print(list, func(w io.Writer) {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "SLUG\tID\tISOLATION\tSTATUS\tVERSION\tNAME")
						for _, t := range list {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.Slug, t.ID, t.Isolation, t.Status, t.Version, t.Name)
						}
						tw.Flush()
					})
				}, &svc)
			},
		},
		&cobra.Command{
			Use:   "show SLUG",
			Short: "Show one tenant",
			Args:  args(cobra.ExactArgs(1)),
			RunE:  c.tenantOp((*control.Service).Tenant),
		},
		&cobra.Command{
			Use:   "suspend SLUG",
			Short: "Suspend a tenant: its keys are refused with 403 until resumed",
			Args:  args(cobra.ExactArgs(1)),
			RunE: c.tenantOp(func(svc *control.Service, ctx context.Context, slug string) (control.Tenant, error) {
				return svc.SetStatus(ctx, slug, control.StatusSuspended)
			}),
		},
		&cobra.Command{
			Use:   "resume SLUG",
			Short: "Resume a suspended tenant",
			Args:  args(cobra.ExactArgs(1)),
			RunE: c.tenantOp(func(svc *control.Service, ctx context.Context, slug string) (control.Tenant, error) {
				return svc.SetStatus(ctx, slug, control.StatusActive)
			}),
		},
		&cobra.Command{
			Use:   "delete SLUG",
			Short: "Delete a tenant: every row, schema or database it has, and its keys",
			Args:  args(cobra.ExactArgs(1)),
			RunE:  c.tenantOp((*control.Service).DeleteTenant),
		},
		c.exportCmd(),
		c.importCmd(),
		c.limitsCmd(),
		c.statsCmd(),
	)
	return cmd
}

// tenantOp runs op on the tenant named by the one argument and prints the
// tenant it returns.
func (c *cli) tenantOp(op func(*control.Service, context.Context, string) (control.Tenant, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, a []string) error {
		var svc *control.Service
		return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
			t, err := op(svc, ctx, a[0])
			if err != nil {
				return notFound(err, "tenant "+a[0])
			}
			return c.print(t, func(w io.Writer) {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Slug, t.ID, t.Isolation, t.Status)
			})
		}, &svc)
	}
}
