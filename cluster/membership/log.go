package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// newStdLogger returns the *log.Logger that serf and memberlist write to;
// each line becomes one slog record on l. They never write to stderr.
// probeFailed is told the id in memberlist's "Suspect <id> has failed, no
// acks received" lines: memberlist reports a failed probe in no other way
// (see Membership.probeFailed). TestFailureDetected fails if a memberlist
// upgrade changes that line.
func newStdLogger(l *slog.Logger, probeFailed func(id string)) *log.Logger {
	return log.New(logWriter{l, probeFailed}, "", 0)
}

type logWriter struct {
	l           *slog.Logger
	probeFailed func(id string)
}

func (w logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(p))
	w.l.Log(context.Background(), level, msg)
	if id, ok := suspectedID(msg); ok && w.probeFailed != nil {
		w.probeFailed(id)
	}
	return len(p), nil
}

const (
	suspectPrefix = "memberlist: Suspect "
	suspectSuffix = " has failed, no acks received"
)

// suspectedID extracts the id from memberlist's failed-probe line.
func suspectedID(msg string) (string, bool) {
	if !strings.HasPrefix(msg, suspectPrefix) || !strings.HasSuffix(msg, suspectSuffix) {
		return "", false
	}
	id := msg[len(suspectPrefix) : len(msg)-len(suspectSuffix)]
	return id, id != ""
}

// parseLogLine splits a serf/memberlist log line into a level and the
// message ("memberlist: Suspect b has failed, no acks received"). Lines
// without a level prefix are Info, except a few "Err: ..." ones.
func parseLogLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "[") {
		if strings.HasPrefix(line, "Err") {
			return slog.LevelError, line
		}
		return slog.LevelInfo, line
	}
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return slog.LevelInfo, line
	}
	msg := strings.TrimSpace(line[end+1:])
	switch strings.ToUpper(line[1:end]) {
	case "TRACE", "DEBUG":
		return slog.LevelDebug, msg
	case "INFO":
		return slog.LevelInfo, msg
	case "WARN", "WARNING":
		return slog.LevelWarn, msg
	case "ERR", "ERROR":
		return slog.LevelError, msg
	default:
		return slog.LevelInfo, line
	}
}
