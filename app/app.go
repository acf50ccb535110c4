// Package app assembles Bulkhead from its fx modules: configuration,
// logging, pools, the isolation strategies, the control plane, the FinOps
// domain and the HTTP server. Commands pick the bundle they need.
package app

import (
	"context"
	"fmt"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
	"github.com/bulkheadhq/bulkhead/app/logging"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
)

// Base is what every command needs: configuration from in, logging, the
// pools, the isolation strategies and the control plane.
func Base(in config.Input) fx.Option {
	return fx.Options(
		fx.Supply(in),
		fx.WithLogger(logging.FxLogger),
		config.Module,
		logging.Module,
		postgres.Module,
		fx.Module("isolation", fx.Provide(
			NewStrategies,
			func(r *isolation.Router) isolation.Strategy { return r },
		)),
		control.Module,
	)
}

// Server adds what serving needs to Base: the domain and the HTTP server,
// which starts listening only after the safety check passed.
func Server() fx.Option {
	return fx.Options(
		finops.Module,
		httpapi.Module,
		fx.Invoke(registerSafetyCheck),
		fx.Invoke(func(*httpapi.Server) {}),
	)
}

// NewStrategies is the one place the configured strategy is chosen: it
// returns a Router provisioning with it and running tenants of every
// strategy this build has (tenants keep the strategy they were provisioned
// with). An unknown name is a configuration error.
func NewStrategies(cfg *config.Config, pools *postgres.Pools) (*isolation.Router, error) {
	all := []isolation.Strategy{
		rls.New(pools.App, pools.Owner),
	}
	var def isolation.Strategy
	var others []isolation.Strategy
	for _, s := range all {
		if s.Name() == cfg.Isolation.Strategy {
			def = s
		} else {
			others = append(others, s)
		}
	}
	if def == nil {
		msg := (&isolation.UnknownStrategyError{Name: cfg.Isolation.Strategy}).Error()
		if cfg.Isolation.Strategy == isolation.Schema || cfg.Isolation.Strategy == isolation.Database {
			msg = fmt.Sprintf("strategy %q is not available in this build yet", cfg.Isolation.Strategy)
		}
		return nil, config.Errorf("isolation.strategy", msg)
	}
	return isolation.NewRouter(def, others...), nil
}

// registerSafetyCheck makes start fail, before anything listens, when the
// serving role could bypass isolation or a critical invariant is broken.
func registerSafetyCheck(lc fx.Lifecycle, cfg *config.Config, pools *postgres.Pools, strategy *isolation.Router) error {
	if err := cfg.RequireServing(); err != nil {
		return err
	}
	lc.Append(fx.StartHook(func(ctx context.Context) error {
		return SafetyCheck(ctx, pools, strategy)
	}))
	return nil
}

// SafetyCheck returns an *isolation.UnsafeError listing the critical
// findings for the serving role and the strategies' storage, or nil.
func SafetyCheck(ctx context.Context, pools *postgres.Pools, strategy isolation.Strategy) error {
	findings, err := isolation.CheckServingRole(ctx, pools.App)
	if err != nil {
		return fmt.Errorf("check serving role: %w", err)
	}
	more, err := strategy.Verify(ctx)
	if err != nil {
		return fmt.Errorf("verify isolation: %w", err)
	}
	if critical := isolation.CriticalOf(append(findings, more...)); len(critical) > 0 {
		return &isolation.UnsafeError{Findings: critical}
	}
	return nil
}
