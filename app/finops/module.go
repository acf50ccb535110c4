package finops

import "go.uber.org/fx"

// Module provides the domain *Service.
var Module = fx.Module("finops", fx.Provide(New))
