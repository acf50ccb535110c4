package auth

import (
	"context"
	"log/slog"

	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app/config"
)

// Module provides the *Verifier of bearer tokens from oidc.issuers: it
// loads their keys in the background on start and stops refreshing them on
// stop.
var Module = fx.Module("auth", fx.Provide(newVerifier))

func newVerifier(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger) *Verifier {
	v := NewVerifier(cfg.OIDC, log)
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error { v.Warm(); return nil },
		OnStop:  func(context.Context) error { v.Close(); return nil },
	})
	return v
}
