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
		Short: "API keys: create, revoke, grant",
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
	var grantTenant, revokeTenant string
	grant := &cobra.Command{
		Use:   "grant ID --tenant SLUG",
		Short: "Let a key read another tenant in consolidated reports",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if grantTenant == "" {
				return usageError{errors.New("key grant: --tenant is required")}
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if err := svc.GrantKey(ctx, a[0], grantTenant); err != nil {
					return notFound(err, "key "+a[0]+" or tenant "+grantTenant)
				}
				return c.print(map[string]any{"id": a[0], "tenant": grantTenant, "granted": true}, func(w io.Writer) {
					fmt.Fprintf(w, "key %s may read tenant %s\n", a[0], grantTenant)
				})
			}, &svc)
		},
	}
	grant.Flags().StringVar(&grantTenant, "tenant", "", "the tenant the key may read")
	revoke := &cobra.Command{
		Use:   "revoke ID [--tenant SLUG]",
		Short: "Revoke a key (it stops working on the next request), or with --tenant only its grant to read that tenant",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				if revokeTenant != "" {
					if err := svc.UngrantKey(ctx, a[0], revokeTenant); err != nil {
						return notFound(err, "grant of tenant "+revokeTenant+" to key "+a[0])
					}
					return c.print(map[string]any{"id": a[0], "tenant": revokeTenant, "granted": false}, func(w io.Writer) {
						fmt.Fprintf(w, "key %s may no longer read tenant %s\n", a[0], revokeTenant)
					})
				}
				if err := svc.RevokeKey(ctx, a[0]); err != nil {
					return notFound(err, "key "+a[0])
				}
				return c.print(map[string]any{"id": a[0], "revoked": true}, func(w io.Writer) {
					fmt.Fprintf(w, "revoked key %s\n", a[0])
				})
			}, &svc)
		},
	}
	revoke.Flags().StringVar(&revokeTenant, "tenant", "", "revoke only the key's grant to read this tenant")
	cmd.AddCommand(create, grant, revoke)
	return cmd
}

// notFound words store.ErrNotFound for the command line.
func notFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: not found", what)
	}
	return err
}
