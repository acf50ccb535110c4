// Package app assembles Bulkhead from its fx modules: configuration,
// logging, pools, the isolation strategies, the control plane, the FinOps
// domain and the HTTP server. Commands pick the bundle they need.
package app

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/auth"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/app/limits"
	"github.com/bulkheadhq/bulkhead/app/logging"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// Base is what every command needs: configuration from in, logging, the
// pools, the isolation strategies and the control plane. in.Strategies
// defaults to Strategies.
func Base(in config.Input) fx.Option {
	if in.Strategies == nil {
		in.Strategies = Strategies
	}
	return fx.Options(
		fx.Supply(in, in.Strategies),
		fx.WithLogger(logging.FxLogger),
		config.Module,
		logging.Module,
		postgres.Module,
		fx.Module("isolation", fx.Provide(
			NewRegistry,
			// Tenant work goes through the move fence (app/move).
			func(r *isolation.Registry, pools *postgres.Pools) isolation.Runner {
				return move.NewFence(r, cmp.Or(pools.App, pools.Owner))
			},
		)),
		control.Module,
		move.Module,
	)
}

// Server adds what serving needs to Base: the load walls, the domain —
// whose tenant work goes through the admission Gate — and the HTTP server,
// which starts listening only after the safety check passed.
func Server() fx.Option {
	return fx.Options(
		fx.Provide(NewGate, newUsage, newRecorder),
		fx.Module("serving",
			fx.Decorate(func(g *limits.Gate) isolation.Runner { return g }),
			finops.Module,
		),
		auth.Module,
		httpapi.Module,
		fx.Provide(newVerifier, func(m *move.Mover) httpapi.Mover { return m }),
		fx.Invoke(registerSafetyCheck),
		fx.Invoke(watchKeys),
		fx.Invoke(func(*httpapi.Server, *limits.Recorder) {}),
	)
}

// NewGate is the admission Gate in front of the Runner that the domain
// runs tenant work through. Tenants of a strategy with a connection budget
// of its own (isolation.ConnectionBudgeter: the database strategy) share
// that budget; the others share the serving pool, less one connection kept
// for authenticating keys and the other reads of the control plane. The
// Registry says which (s may be it, or a decoration of it).
func NewGate(s isolation.Runner, registry *isolation.Registry, cfg *config.Config, usage *limits.Usage) *limits.Gate {
	serving := max(cfg.Database.MaxConnections-1, 1)
	c := cfg.Limits.Concurrency
	return limits.NewGate(s, limits.GateConfig{
		MaxConcurrent:  c.PerTenant,
		MaxShare:       c.MaxShare,
		MaxQueued:      c.QueuePerTenant,
		MaxQueuedTotal: c.Queue,
		QueueTimeout:   c.QueueTimeout,
		HeavyCap:       c.HeavyPerTenant,
		HeavyAfter:     c.HeavyAfter,
		Bounds: isolation.Bounds{
			Statement:         cfg.Database.StatementTimeout,
			Lock:              cfg.Database.LockTimeout,
			IdleInTransaction: cfg.Database.IdleInTransactionTimeout,
		},
		Pool: func(t isolation.Tenant) (string, int) {
			if budget, ok := registry.BudgetOf(t); ok {
				return "budget", budget
			}
			return "serving", serving
		},
		Observe: func(t isolation.Tenant, o limits.Outcome) { usage.Observe(t.ID, o) },
	})
}

func newUsage(cfg *config.Config) *limits.Usage { return limits.NewUsage(cfg.Limits.Stats.Tenants) }

// newRecorder records the usage counters in the control plane every
// limits.stats.flush_interval while the server runs, and once more when it
// stops.
func newRecorder(lc fx.Lifecycle, usage *limits.Usage, ctl *control.Service, cfg *config.Config, log *slog.Logger) *limits.Recorder {
	r := limits.NewRecorder(usage, ctl, cfg.Limits.Stats.Top, log)
	runInBackground(lc, func(ctx context.Context) {
		r.Run(ctx, cfg.Limits.Stats.FlushInterval, 5*time.Second)
	})
	return r
}

// watchKeys keeps the control plane's cache of authenticated keys in step
// with the authentication generation while the server runs (see
// control.Service.WatchKeys).
func watchKeys(lc fx.Lifecycle, ctl *control.Service) {
	runInBackground(lc, ctl.WatchKeys)
}

// runInBackground runs loop in a goroutine from start to stop. Stop
// cancels loop's context and waits for loop to return, but no longer than
// the stop context allows.
func runInBackground(lc fx.Lifecycle, loop func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				loop(ctx)
			}()
			return nil
		},
		OnStop: func(stop context.Context) error {
			cancel()
			select {
			case <-done:
				return nil
			case <-stop.Done():
				return stop.Err()
			}
		},
	})
}

// registerSafetyCheck makes start fail, before anything listens, when the
// serving role could bypass isolation, a critical invariant is broken, or
// database.url goes through a transaction-mode pooler that database.pooler
// does not declare. Warnings are logged and do not stop the start.
func registerSafetyCheck(lc fx.Lifecycle, cfg *config.Config, pools *postgres.Pools, strategies *isolation.Registry, log *slog.Logger) error {
	if err := cfg.RequireServing(); err != nil {
		return err
	}
	lc.Append(fx.StartHook(func(ctx context.Context) error {
		if err := checkPooler(ctx, cfg, pools, log); err != nil {
			return err
		}
		findings, err := SafetyFindings(ctx, pools, strategies)
		if err != nil {
			return err
		}
		for _, f := range findings {
			if f.Severity != isolation.Critical {
				log.Warn("isolation finding", "code", f.Code, "object", f.Object, "detail", f.Detail, "fix", f.Fix)
			}
		}
		return refuse(findings)
	}))
	return nil
}

// checkPooler compares database.pooler with what postgres.DetectPooler
// sees. Undeclared transaction pooling is a configuration error: the
// statement-caching exec mode then fails at random once a statement
// prepared on one server session runs on another (PgBouncer before 1.21).
// Declared pooling that is not seen is only logged: the describe-caching
// exec mode works on a direct connection too, at the cost of a describe
// per new statement.
func checkPooler(ctx context.Context, cfg *config.Config, pools *postgres.Pools, log *slog.Logger) error {
	seen, err := postgres.DetectPooler(ctx, pools.App.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("check database.url for a pooler: %w", err)
	}
	declared := cfg.Database.Pooler == config.PoolerPgBouncer
	switch {
	case seen.Pooled && !declared:
		return config.Errorf("database.pooler", fmt.Sprintf(
			"database.url reaches PostgreSQL through a transaction-mode pooler (%s): set database.pooler to %s",
			seen.Evidence, config.PoolerPgBouncer))
	case !seen.Pooled && declared:
		log.Warn("database.pooler is pgbouncer but no transaction pooling was seen on database.url; serving anyway",
			"evidence", seen.Evidence)
	default:
		log.Debug("pooler check", "pooler", cfg.Database.Pooler, "pooled", seen.Pooled, "evidence", seen.Evidence)
	}
	return nil
}

// SafetyFindings returns every finding of verify.All for the serving pool
// and every strategy of the registry: what `bulkhead verify` prints.
func SafetyFindings(ctx context.Context, pools *postgres.Pools, strategies *isolation.Registry) ([]isolation.Finding, error) {
	findings, err := verify.All(ctx, pools.App, strategies)
	if err != nil {
		return nil, fmt.Errorf("verify isolation: %w", err)
	}
	return findings, nil
}

// newVerifier lets the admin API report what `bulkhead verify` does, over
// the same pool and every strategy the server runs.
func newVerifier(pools *postgres.Pools, strategies *isolation.Registry) httpapi.Verifier {
	return func(ctx context.Context) ([]isolation.Finding, error) {
		return SafetyFindings(ctx, pools, strategies)
	}
}

// SafetyCheck returns an *isolation.UnsafeError listing the critical
// findings of SafetyFindings, or nil: serve refuses to start on it.
func SafetyCheck(ctx context.Context, pools *postgres.Pools, strategies *isolation.Registry) error {
	findings, err := SafetyFindings(ctx, pools, strategies)
	if err != nil {
		return err
	}
	return refuse(findings)
}

// refuse is the one rule serve refuses to start on: an
// *isolation.UnsafeError listing the critical findings, or nil.
func refuse(findings []isolation.Finding) error {
	if critical := isolation.CriticalOf(findings); len(critical) > 0 {
		return &isolation.UnsafeError{Findings: critical}
	}
	return nil
}
