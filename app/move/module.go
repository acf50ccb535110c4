package move

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Module provides the *Mover, with the default Options but for the pause.
// The cut-over's pause is kept to half of database.lock_timeout, which
// bounds how long the tenant's requests wait at its fence.
var Module = fx.Module("move", fx.Provide(func(ctl *control.Service, strategies *isolation.Registry, cfg *config.Config, log *slog.Logger) *Mover {
	return New(ctl, strategies, log, Options{Pause: cfg.Database.LockTimeout / 2})
}))
