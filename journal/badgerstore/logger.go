package badgerstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Logger adapts slog to Badger's printf-style logger, with the attribute
// component set. Badger's info lines (table levels, compaction and replay
// progress) go out at debug: they are chatter at every open and close;
// warnings and errors keep their level. Messages below the handler's level
// are not formatted. Other Badger databases of the node (the read store)
// use it too.
func Logger(l *slog.Logger, component string) badger.Logger {
	return badgerLogger{l: l.With("component", component)}
}

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
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }
