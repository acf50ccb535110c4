package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/strategylists"
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
	var (
		name string
		at   control.Placement
	)
	create := &cobra.Command{
		Use:   "create SLUG [--name NAME] [--isolation " + strings.Join(app.StrategyNames(), "|") + "] [--server NAME]",
		Short: "Provision a tenant, with the configured isolation strategy unless --isolation says otherwise",
		Args:  args(cobra.ExactArgs(1)),
		RunE: c.tenantOp(func(svc *control.Service, ctx context.Context, slug string) (control.Tenant, error) {
			t, err := svc.CreateTenantAt(ctx, slug, name, at)
			var refused *store.ValidationError
			if errors.As(err, &refused) && (refused.Field == "isolation" || refused.Field == "server") {
				return t, usageError{fmt.Errorf("tenant create %s: --%s: %s", slug, refused.Field, refused.Msg)}
			}
			return t, err
		}),
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the slug)")
	// Shadows the configuration flag of the same name: here it places this
	// tenant, it does not change the deployment's default.
	create.Flags().StringVar(&at.Isolation, "isolation", "", "the tenant's strategy: "+strategylists.OrList(app.StrategyNames())+" (default: isolation.strategy); one of isolation.allowed")
	create.Flags().StringVar(&at.Server, "server", "", "the server of isolation.database.servers to place it on (database strategy; default: the least loaded)")
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
		c.tenantShowCmd(),
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
		c.tenantDeleteCmd(),
		c.exportCmd(),
		c.importCmd(),
		c.limitsCmd(),
		c.statsCmd(),
		c.moveCmd(),
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

// tenantDeleteCmd deletes a tenant after the operator confirms by typing
// its slug, or at once with --yes. Without a terminal to ask on and without
// --yes it refuses (exit 2): a script must say what it means.
func (c *cli) tenantDeleteCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete SLUG [--yes]",
		Short: "Delete a tenant: every row, schema or database it has, and its keys (asks first unless --yes)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			slug := a[0]
			if !yes {
				if !c.interactive() {
					return usageError{fmt.Errorf("tenant delete %s: stdin is not a terminal to confirm on; pass --yes to delete without asking", slug)}
				}
				fmt.Fprintf(c.stderr, "Delete tenant %s and every row, schema or database it has, and its keys? This cannot be undone.\nType the slug to confirm: ", slug)
				line, err := c.readLine(cmd.Context())
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				if strings.TrimSpace(line) != slug {
					return fmt.Errorf("tenant delete %s: not confirmed; nothing was deleted", slug)
				}
			}
			return c.tenantOp((*control.Service).DeleteTenant)(cmd, a)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking")
	return cmd
}

// readLine reads one line of stdin, or gives up when ctx ends (Ctrl-C at a
// prompt): the read itself cannot be interrupted, so it is left behind in a
// process on its way out.
func (c *cli) readLine(ctx context.Context) (string, error) {
	type result struct {
		line string
		err  error
	}
	out := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		out <- result{line, err}
	}()
	select {
	case r := <-out:
		return r.line, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// tenantShowCmd shows one tenant and, when it has moved or is moving, its
// latest move (its step, the rows copied, the write pause).
func (c *cli) tenantShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show SLUG",
		Short: "Show one tenant, and its latest move",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				t, err := svc.Tenant(ctx, a[0])
				if err != nil {
					return notFound(err, "tenant "+a[0])
				}
				out := struct {
					control.Tenant
					Move *control.Move `json:"move,omitempty"`
				}{Tenant: t}
				mv, err := svc.LastMove(ctx, a[0])
				switch {
				case err == nil:
					out.Move = &mv
				case !errors.Is(err, store.ErrNotFound):
					return err
				}
				return c.print(out, func(w io.Writer) {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Slug, t.ID, t.Isolation, t.Status)
					if out.Move != nil {
						fmt.Fprint(w, "move\t")
						printMove(w, *out.Move)
					}
				})
			}, &svc)
		},
	}
}
