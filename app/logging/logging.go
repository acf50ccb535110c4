// Package logging builds the process's slog logger: JSON or text on
// stderr, at the configured level.
package logging

import (
	"io"
	"log/slog"
	"os"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/bulkheadhq/bulkhead/app/config"
)

// New returns the logger cfg asks for, writing to stderr. With no format
// configured it writes text on a terminal and JSON otherwise.
func New(cfg *config.Config) *slog.Logger {
	return NewTo(os.Stderr, cfg.Log.Format, cfg.Log.Level)
}

// NewTo returns a logger writing to w in format ("json", "text" or "" for
// automatic) at level.
func NewTo(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// FxLogger is fx's event logger: silent. Every error fx reports is also
// returned to the command, which reports it once; and it must not depend on
// the configuration, or a bad configuration would make fx fall back to
// printing its own multi-line report.
func FxLogger() fxevent.Logger { return fxevent.NopLogger }

// Module provides the *slog.Logger.
var Module = fx.Module("logging", fx.Provide(New))
