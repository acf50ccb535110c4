package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
)

func (c *cli) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "API keys: create, revoke",
		Args:  args(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return usageError{fmt.Errorf("key: missing subcommand")} },
	}
	var tenant, role string
	create := &cobra.Command{
		Use:   "create --tenant SLUG [--role viewer|editor]",
		Short: "Make a key for a tenant; its secret is printed once and stored only as a hash",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" {
				return usageError{errors.New("key create: --tenant is required")}
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return usageError{fmt.Errorf("--role: %w", err)}
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				k, err := svc.CreateKey(ctx, tenant, r)
				if err != nil {
					return notFound(err, "tenant "+tenant)
				}
				return c.print(k, func(w io.Writer) {
					fmt.Fprintf(w, "key %s for tenant %s (%s):\n%s\n", k.ID, k.Tenant, k.Role, k.Key)
				})
			}, &svc)
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "the tenant's slug")
	create.Flags().StringVar(&role, "role", "viewer", "viewer or editor")
	cmd.AddCommand(create, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key; it stops working on the next request",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if err := svc.RevokeKey(ctx, a[0]); err != nil {
					return notFound(err, "key "+a[0])
				}
				return c.print(map[string]any{"id": a[0], "revoked": true}, func(w io.Writer) {
					fmt.Fprintf(w, "revoked key %s\n", a[0])
				})
			}, &svc)
		},
	})
	return cmd
}

// notFound words store.ErrNotFound for the command line.
func notFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: not found", what)
	}
	return err
}
