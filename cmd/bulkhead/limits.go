package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
)

// limitsCmd is `tenant limits`: show a tenant's overrides of the configured
// limits, or change them.
func (c *cli) limitsCmd() *cobra.Command {
	var (
		maxConcurrent, burst int
		rate                 float64
		reset                bool
	)
	cmd := &cobra.Command{
		Use:   "limits SLUG [--max-concurrent N] [--rate R] [--burst B] [--reset]",
		Short: "Show or set a tenant's limits: concurrent transactions, and each key's rate and burst (0: the configured default)",
		Long: `Without flags, prints the tenant's overrides and the limits in force for it.
With flags, changes the overrides named and keeps the others; 0 puts one back
to the configured default, --reset all of them. Servers apply a change from
the next request that authenticates. Every change is audited.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			slug := a[0]
			fl := cmd.Flags()
			switch {
			case maxConcurrent < 0:
				return usageError{errors.New("--max-concurrent: want 0 (the default) or more")}
			case rate < 0 || rate != rate:
				return usageError{errors.New("--rate: want 0 (the default) or a number of requests per second")}
			case burst < 0:
				return usageError{errors.New("--burst: want 0 (the default) or more")}
			case reset && (fl.Changed("max-concurrent") || fl.Changed("rate") || fl.Changed("burst")):
				return usageError{errors.New("--reset: give it alone")}
			}
			change := reset || fl.Changed("max-concurrent") || fl.Changed("rate") || fl.Changed("burst")
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				l, err := svc.TenantLimits(ctx, slug)
				if err != nil {
					return notFound(err, "tenant "+slug)
				}
				if change {
					o := l.Overrides
					if reset {
						o = control.Limits{}
					}
					if fl.Changed("max-concurrent") {
						o.MaxConcurrent = intOrDefault(maxConcurrent)
					}
					if fl.Changed("rate") {
						o.Rate = nil
						if rate > 0 {
							o.Rate = &rate
						}
					}
					if fl.Changed("burst") {
						o.Burst = intOrDefault(burst)
					}
					if l, err = svc.SetTenantLimits(ctx, slug, o); err != nil {
						var invalid *store.ValidationError
						if errors.As(err, &invalid) {
							return usageError{err}
						}
						return notFound(err, "tenant "+slug)
					}
				}
				return c.print(l, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "LIMIT\tIN FORCE\tOVERRIDE")
					fmt.Fprintf(tw, "max_concurrent\t%d\t%s\n", l.Effective.MaxConcurrent, show(l.Overrides.MaxConcurrent))
					fmt.Fprintf(tw, "rate\t%s\t%s\n", strconv.FormatFloat(l.Effective.Rate, 'g', -1, 64), show(l.Overrides.Rate))
					fmt.Fprintf(tw, "burst\t%d\t%s\n", l.Effective.Burst, show(l.Overrides.Burst))
					tw.Flush()
				})
			}, &svc)
		},
	}
	cmd.Flags().IntVar(&maxConcurrent, "max-concurrent", 0, "transactions the tenant may run at once in one server process (0: the default)")
	cmd.Flags().Float64Var(&rate, "rate", 0, "requests per second per key of the tenant (0: the default)")
	cmd.Flags().IntVar(&burst, "burst", 0, "requests at once per key of the tenant (0: the default)")
	cmd.Flags().BoolVar(&reset, "reset", false, "put every limit back to the configured default")
	return cmd
}

func intOrDefault(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func show[T int | float64](p *T) string {
	if p == nil {
		return "default"
	}
	return fmt.Sprint(*p)
}

// statsCmd is `tenant stats`: the top tenants over the last minutes.
func (c *cli) statsCmd() *cobra.Command {
	var (
		minutes, limit int
		by             string
	)
	cmd := &cobra.Command{
		Use:   "stats [--minutes N] [--by requests|db_time|waits|rejections] [--limit N]",
		Short: "Top tenants by requests, database time, waits and rejections over the last minutes",
		Long: `Reads the per-minute counters every serving process records in the control
plane (every limits.stats.flush_interval), added up over processes. Tenants no
process counted one by one are added up as (others).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(control.StatsOrders(), by) {
				return usageError{fmt.Errorf("--by %q: want one of %s", by, strings.Join(control.StatsOrders(), ", "))}
			}
			if limit < 1 || limit > control.MaxStatsLimit {
				return usageError{fmt.Errorf("--limit %d: want 1 to %d", limit, control.MaxStatsLimit)}
			}
			if minutes < 1 {
				return usageError{fmt.Errorf("--minutes %d: want at least 1", minutes)}
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				st, err := svc.TenantStats(ctx, minutes, by, limit)
				if err != nil {
					return err
				}
				return c.print(st, func(w io.Writer) {
					fmt.Fprintf(w, "last %d minutes (since %s), by %s\n", st.Minutes, st.Since.Format("15:04 MST"), st.By)
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
					fmt.Fprintln(tw, "TENANT\tREQUESTS\tDB SECONDS\tWAITS\tWAIT SECONDS\tREJECTIONS\t")
					for _, s := range st.Items {
						name := s.Tenant
						if name == "" {
							name = s.TenantID.String() + " (deleted)"
						}
						fmt.Fprintf(tw, "%s\t%d\t%.3f\t%d\t%.3f\t%d\t\n", name, s.Requests, s.DBSeconds, s.Waits, s.WaitSeconds, s.Rejections)
					}
					tw.Flush()
				})
			}, &svc)
		},
	}
	cmd.Flags().IntVar(&minutes, "minutes", 5, "the window: the last N whole minutes")
	cmd.Flags().StringVar(&by, "by", "requests", "rank by requests, db_time, waits or rejections")
	cmd.Flags().IntVar(&limit, "limit", 10, "how many tenants")
	return cmd
}
