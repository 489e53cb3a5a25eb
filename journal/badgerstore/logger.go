package badgerstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// badgerLogger sends Badger's printf-style logs to slog with
// component=badger. Messages below the handler's level are not formatted.
type badgerLogger struct{ l *slog.Logger }

func newBadgerLogger(l *slog.Logger) badgerLogger {
	return badgerLogger{l: l.With("component", "badger")}
}

func (b badgerLogger) log(level slog.Level, format string, args []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelInfo, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }
