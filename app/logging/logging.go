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

// FxLogger logs fx's own events at debug level; pass it to fx.WithLogger.
func FxLogger(log *slog.Logger) fxevent.Logger {
	l := &fxevent.SlogLogger{Logger: log}
	l.UseLogLevel(slog.LevelDebug)
	return l
}

// Module provides the *slog.Logger.
var Module = fx.Module("logging", fx.Provide(New))
