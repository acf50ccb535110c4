// Package system runs the cross-tenant work that must see past the tenant
// wall — usage reports, global audits — as the bulkhead_system role, which
// bypasses Row-Level Security.
//
// It exists only for operator commands: no fx module of the server includes
// it, the serving role is not a member of the system role, and every
// escalation is committed to the audit log, with its reason, before it runs.
// If that write fails, nothing runs.
package system

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Escalator runs audited work as the system role. It is safe for
// concurrent use.
type Escalator struct {
	cfg     *config.Config
	control *control.Service
}

// New returns an Escalator; it refuses to run unless system.enabled.
func New(cfg *config.Config, ctl *control.Service) *Escalator {
	return &Escalator{cfg: cfg, control: ctl}
}

// ErrReasonRequired is returned for an escalation without a reason.
var ErrReasonRequired = errors.New("a reason is required for every escalation (--reason)")

// Run commits an audit row for action (with reason and the tenants
// concerned), then runs fn in a transaction acting as the system role, on a
// connection of its own made with database.migrate_url.
func (e *Escalator) Run(ctx context.Context, action, reason string, tenants []string, fn func(pgx.Tx) error) error {
	if !e.cfg.System.Enabled {
		return config.Errorf("system.enabled", "the system role is off; set BULKHEAD_SYSTEM__ENABLED=true and run bulkhead migrate")
	}
	if strings.TrimSpace(reason) == "" {
		return ErrReasonRequired
	}
	if err := e.cfg.RequireMigrate(); err != nil {
		return err
	}
	if _, err := e.control.Audit(ctx, control.Event{Action: action, Reason: reason, Tenants: tenants}); err != nil {
		return fmt.Errorf("audit %s before escalating: %w", action, err)
	}
	conn, err := pgx.Connect(ctx, e.cfg.Database.MigrateURL)
	if err != nil {
		return fmt.Errorf("escalate: connect: %w", err)
	}
	defer conn.Close(context.Background())
	opts := pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL ROLE " + pgx.Identifier{isolation.SystemRole}.Sanitize()}
	return pgx.BeginTxFunc(ctx, conn, opts, fn)
}

// Module provides the *Escalator, for operator commands only.
var Module = fx.Module("system", fx.Provide(New))
