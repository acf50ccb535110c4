package move

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Module provides the *Mover, with the default Options.
var Module = fx.Module("move", fx.Provide(func(ctl *control.Service, router *isolation.Router, log *slog.Logger) *Mover {
	return New(ctl, router, log, Options{})
}))
