package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func (c *cli) verifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the live database against the isolation invariants",
		Long: `Check the live database against the isolation invariants, as the serving
role (database.url) sees it: the serving role's attributes and memberships,
every tenant table (RLS enabled, forced, a policy on the tenant setting,
partitions included), grants that RLS does not cover, views, functions, the
control plane's privileges, the server version, and each isolation
strategy's own checks. Prints each finding with its stable code, severity,
the object it concerns and a one-line fix (docs/VERIFY.md lists the codes);
exits 1 if there is any. Critical findings are those serve refuses to
start on.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var (
				cfg      *config.Config
				pools    *postgres.Pools
				strategy *isolation.Registry
			)
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if err := cfg.RequireServing(); err != nil {
					return err
				}
				findings, err := app.SafetyFindings(ctx, pools, strategy)
				if err != nil {
					return err
				}
				if findings == nil {
					findings = []isolation.Finding{}
				}
				if err := c.print(findings, func(w io.Writer) {
					for _, f := range findings {
						fmt.Fprintln(w, f.String())
					}
					fmt.Fprintf(w, "%d findings, %d critical\n", len(findings), len(isolation.CriticalOf(findings)))
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
