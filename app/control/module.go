package control

import "go.uber.org/fx"

// Module provides the control plane *Service.
var Module = fx.Module("control", fx.Provide(New))
