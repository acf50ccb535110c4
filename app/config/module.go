package config

import "go.uber.org/fx"

// Module provides *Config, built from the Input the command supplies.
var Module = fx.Module("config", fx.Provide(New))
