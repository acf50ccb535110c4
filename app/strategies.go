package app

import (
	"context"
	"errors"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/database"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/isolation/schema"
)

//go:generate go run ../internal/cmd/strategylists

// Strategies are the isolation strategies of this build, in the order help
// texts name them; the first is the default of isolation.strategy.
// Everything that names strategies derives from this list: the
// configuration (config.Input.Strategies), the registry (NewRegistry),
// the CLI's help, and, by go generate, the OpenAPI and Helm schema enums.
// Adding a strategy is its package and one line here.
var Strategies = []isolation.Descriptor{
	rls.Descriptor,
	schema.Descriptor,
	database.Descriptor,
}

// StrategyNames lists the names of Strategies, in order.
func StrategyNames() []string {
	names := make([]string, len(Strategies))
	for i, d := range Strategies {
		names[i] = d.Name
	}
	return names
}

// NewRegistry builds every strategy of the configuration
// (cfg.Isolation.Strategies, from config.Input.Strategies) and returns the
// registry provisioning with isolation.strategy. A strategy whose
// configuration cannot work is a configuration error naming its key. The
// strategies are closed when the app stops.
func NewRegistry(lc fx.Lifecycle, cfg *config.Config, pools *postgres.Pools, log *slog.Logger, descriptors []isolation.Descriptor) (*isolation.Registry, error) {
	deps := isolation.Deps{
		App:        pools.App,
		Owner:      pools.Owner,
		URL:        cfg.Database.URL,
		MigrateURL: cfg.Database.MigrateURL,
		PoolConfig: func(dsn string) (*pgxpool.Config, error) {
			return postgres.PoolConfig(dsn, cfg.Database.Pooler, 0)
		},
		Citus:              cfg.Database.Citus,
		System:             cfg.System.Enabled,
		MigrateParallelism: cfg.Isolation.MigrateParallelism,
		Logger:             log,
		Control:            control.NewDirectory(pools),
	}
	var built []isolation.Strategy
	for _, d := range descriptors {
		s, err := d.New(deps, cfg.Isolation.Settings[d.Name])
		if err != nil {
			for _, b := range built {
				closeOne(b)
			}
			var ce *isolation.ConfigError
			if errors.As(err, &ce) {
				return nil, config.Errorf("isolation."+d.Name+"."+ce.Key, ce.Msg)
			}
			return nil, config.Errorf("isolation."+d.Name, err.Error())
		}
		built = append(built, s)
	}
	r, err := isolation.NewRegistry(cfg.Isolation.Strategy, built...)
	if err != nil {
		for _, b := range built {
			closeOne(b)
		}
		return nil, config.Errorf("isolation.strategy", err.Error())
	}
	lc.Append(fx.StopHook(func(context.Context) error { return r.Close() }))
	return r, nil
}

// closeOne closes s when it holds anything (see isolation.Registry.Close).
func closeOne(s isolation.Strategy) {
	if r, err := isolation.NewRegistry(s.Name(), s); err == nil {
		_ = r.Close()
	}
}
