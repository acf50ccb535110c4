package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func (c *cli) verifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the live database against the isolation invariants",
		Long: `Check the live database against the isolation invariants, as the serving
role (database.url) sees it. Prints each finding with its stable code, the
object it concerns and a one-line fix; exits 1 if there is any.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				cfg      *config.Config
				pools    *postgres.Pools
				strategy isolation.Strategy
			)
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if err := cfg.RequireServing(); err != nil {
					return err
				}
				findings, err := isolation.CheckServingRole(ctx, pools.App)
				if err != nil {
					return err
				}
				more, err := strategy.Verify(ctx)
				if err != nil {
					return err
				}
				findings = append(findings, more...)
				if findings == nil {
					findings = []isolation.Finding{}
				}
				if err := c.print(findings, func(w io.Writer) {
					for _, f := range findings {
						fmt.Fprintln(w, f.String())
					}
					fmt.Fprintf(w, "%d findings\n", len(findings))
				}); err != nil {
					return err
				}
				if len(findings) > 0 {
					return reportedError{fmt.Errorf("%d isolation findings", len(findings)), exitFailure}
				}
				return nil
			}, &cfg, &pools, &strategy)
		},
	}
}
