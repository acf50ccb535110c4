package main

import (
	"context"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
)

func (c *cli) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Serve HTTP until SIGTERM or SIGINT, then drain in-flight requests",
		Long: `Serve HTTP until SIGTERM or SIGINT, then drain in-flight requests and exit 0.

Refuses to start (exit 2) when the serving role could bypass isolation:
superuser, BYPASSRLS, owner of a tenant table or member of a role that owns
one, or when a critical isolation invariant does not hold.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *config.Config
			a := fx.New(app.Base(c.input()), app.Server(), fx.Populate(&cfg))
			if err := a.Err(); err != nil {
				return err
			}
			ctx := cmd.Context()
			startCtx, cancel := context.WithTimeout(ctx, a.StartTimeout())
			defer cancel()
			if err := a.Start(startCtx); err != nil {
				return err
			}
			<-ctx.Done()
			stopCtx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
			defer cancel()
			return a.Stop(stopCtx)
		},
	}
}
