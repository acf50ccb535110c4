package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/store"
)

func (c *cli) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "API keys: create, list, rotate, revoke, grant",
		Args:  args(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return usageError{fmt.Errorf("key: missing subcommand")} },
	}
	var tenant, role, expiresIn string
	create := &cobra.Command{
		Use:   "create --tenant SLUG [--role viewer|editor] [--expires-in DURATION]",
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
			exp, err := expiry("--expires-in", expiresIn)
			if err != nil {
				return err
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				k, err := svc.CreateKeyWith(ctx, tenant, control.KeySpec{Role: r, ExpiresAt: exp})
				if err != nil {
					return notFound(err, "tenant "+tenant)
				}
				return c.print(k, func(w io.Writer) {
					fmt.Fprintf(w, "key %s for tenant %s (%s%s):\n%s\n", k.ID, k.Tenant, k.Role, expiresText(k.ExpiresAt), k.Key)
				})
			}, &svc)
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "the tenant's slug")
	create.Flags().StringVar(&role, "role", "viewer", "viewer or editor")
	create.Flags().StringVar(&expiresIn, "expires-in", "", "the key stops working after this long (e.g. 720h or 90d; default: never)")
	var listTenant string
	list := &cobra.Command{
		Use:   "list --tenant SLUG",
		Short: "List a tenant's keys: id, role, status, created, expires, last used (never a secret)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listTenant == "" {
				return usageError{errors.New("key list: --tenant is required")}
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				keys, err := svc.Keys(ctx, listTenant)
				if err != nil {
					return notFound(err, "tenant "+listTenant)
				}
				return c.print(keys, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tROLE\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
					for _, k := range keys {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Role, k.Status,
							k.CreatedAt.UTC().Format(time.RFC3339), stamp(k.ExpiresAt, "never"), stamp(k.LastUsedAt, "never"))
					}
					tw.Flush()
				})
			}, &svc)
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "the tenant's slug")
	var grace time.Duration
	var rotateExpiresIn string
	rotate := &cobra.Command{
		Use:   "rotate ID [--grace DURATION] [--expires-in DURATION]",
		Short: "Replace a key with a new one (same tenant, role and grants); the old one keeps working for the grace period, then expires",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if grace < 0 {
				return usageError{errors.New("--grace: must not be negative")}
			}
			exp, err := expiry("--expires-in", rotateExpiresIn)
			if err != nil {
				return err
			}
			var svc *control.Service
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				k, old, err := svc.RotateKey(ctx, a[0], grace, control.KeySpec{ExpiresAt: exp})
				if err != nil {
					return notFound(err, "key "+a[0])
				}
				out := struct {
					control.Key
					Replaces         string     `json:"replaces"`
					ReplacedExpireAt *time.Time `json:"replaced_expires_at"`
				}{k, old.ID, old.ExpiresAt}
				return c.print(out, func(w io.Writer) {
					fmt.Fprintf(w, "key %s for tenant %s (%s%s) replaces %s, which works until %s:\n%s\n",
						k.ID, k.Tenant, k.Role, expiresText(k.ExpiresAt), old.ID, stamp(old.ExpiresAt, "never"), k.Key)
				})
			}, &svc)
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", control.DefaultRotateGrace, "how long the old key keeps working (0: stop it now)")
	rotate.Flags().StringVar(&rotateExpiresIn, "expires-in", "", "the new key stops working after this long (default: never)")
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
	cmd.AddCommand(create, list, rotate, grant, revoke)
	return cmd
}

// notFound words store.ErrNotFound for the command line.
func notFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: not found", what)
	}
	return err
}

// expiry turns flag's value, a duration from now (Go's 720h, or days as
// 90d), into an instant; empty is no expiry.
func expiry(flag, v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return nil, usageError{fmt.Errorf("%s %q: want a duration such as 720h or 90d", flag, v)}
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return nil, usageError{fmt.Errorf("%s %q: want a duration such as 720h or 90d", flag, v)}
		}
	}
	if d <= 0 {
		return nil, usageError{fmt.Errorf("%s %q: must be positive", flag, v)}
	}
	at := time.Now().Add(d).UTC().Truncate(time.Second)
	return &at, nil
}

func expiresText(at *time.Time) string {
	if at == nil {
		return ""
	}
	return ", expires " + at.UTC().Format(time.RFC3339)
}

func stamp(at *time.Time, none string) string {
	if at == nil {
		return none
	}
	return at.UTC().Format(time.RFC3339)
}
