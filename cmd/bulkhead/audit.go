package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/system"
	"github.com/bulkheadhq/bulkhead/isolation"
)

func (c *cli) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The append-only, hash-chained audit log: list, verify",
		Args:  args(cobra.NoArgs),
		RunE:  func(*cobra.Command, []string) error { return usageError{errors.New("audit: missing subcommand")} },
	}
	var after int64
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the audit log, oldest first",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), nil, func(ctx context.Context) error {
				entries, err := svc.AuditLog(ctx, after, limit)
				if err != nil {
					return err
				}
				if entries == nil {
					entries = []control.AuditEntry{}
				}
				return c.print(entries, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "SEQ\tAT\tACTOR\tACTION\tTENANTS\tREASON\tHASH")
					for _, e := range entries {
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Format("2006-01-02T15:04:05.000Z07:00"),
							e.Actor, e.Action, strings.Join(e.Tenants, ","), e.Reason, hex.EncodeToString(e.Hash)[:12])
					}
					tw.Flush()
				})
			}, &svc)
		},
	}
	list.Flags().Int64Var(&after, "after", 0, "show rows after this sequence number")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many rows (0: all)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the hash chain; name the first broken row (exit 1)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), nil, func(ctx context.Context) error {
				n, err := svc.VerifyAudit(ctx)
				var broken *control.AuditBreak
				if err != nil && !errors.As(err, &broken) {
					return err
				}
				res := map[string]any{"rows": n, "ok": broken == nil}
				if broken != nil {
					res["broken"] = broken
				}
				if perr := c.print(res, func(w io.Writer) {
					if broken != nil {
						fmt.Fprintf(w, "broken at row %d: %s (%d rows before it chain correctly)\n", broken.Seq, broken.Reason, n)
						return
					}
					fmt.Fprintf(w, "ok: %d rows chain correctly\n", n)
				}); perr != nil {
					return perr
				}
				if broken != nil {
					return reportedError{broken, exitFailure}
				}
				return nil
			}, &svc)
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}

func (c *cli) usageCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "usage --reason TEXT",
		Short: "Rows and bytes per tenant, through the audited system role",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageError{system.ErrReasonRequired}
			}
			var (
				esc      *system.Escalator
				strategy *isolation.Registry
				run      isolation.Runner
			)
			return c.with(cmd.Context(), system.Module, func(ctx context.Context) error {
				report, err := esc.Usage(ctx, reason, strategy, run)
				if err != nil {
					return err
				}
				return c.print(report, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
					fmt.Fprintln(tw, "TENANT\tISOLATION\tROWS\tBYTES\t")
					for _, u := range report {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t\n", u.Tenant, u.Isolation, u.Rows, u.Bytes)
					}
					tw.Flush()
				})
			}, &esc, &strategy, &run)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why this escalation is needed (recorded in the audit log)")
	return cmd
}
