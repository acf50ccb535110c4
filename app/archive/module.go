package archive

import "go.uber.org/fx"

// Module provides the *Archiver, for operator commands.
var Module = fx.Module("archive", fx.Provide(New))
