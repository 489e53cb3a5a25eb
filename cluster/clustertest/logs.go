package clustertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// DumpLines is how many of each node's last log lines the cleanup of a
// failed test prints.
const DumpLines = 60

// logBuffer holds everything a node printed, across all its runs, and wakes
// waiters on every new line.
type logBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	runStart int           // offset of the current run's separator line
	changed  chan struct{} // closed and replaced whenever buf grows
}

func newLogBuffer() *logBuffer {
	return &logBuffer{changed: make(chan struct{})}
}

// beginRun appends the separator line of a new run; later searches
// (WaitLog) start there.
func (l *logBuffer) beginRun(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runStart = l.buf.Len()
	l.appendLocked(line)
}

func (l *logBuffer) appendLine(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.appendLocked(line)
}

func (l *logBuffer) appendLocked(line string) {
	l.buf.WriteString(line)
	l.buf.WriteByte('\n')
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// current reports whether the current run has logged substr, and a channel
// closed at the next line.
func (l *logBuffer) current(substr string) (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.buf.Bytes()[l.runStart:], []byte(substr)), l.changed
}

// lineWriter splits a run's output into lines for the log buffer and
// recognises the ready line. It is used by one goroutine at a time.
type lineWriter struct {
	log     *logBuffer
	partial []byte
	onReady func()
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

// flush hands over a last line that had no newline.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) line(s string) {
	w.log.appendLine(s)
	if w.onReady != nil && isReadyLine(s) {
		w.onReady()
		w.onReady = nil
	}
}

// ReadyMsg is the message a node logs once its API listens.
const ReadyMsg = "node ready"

// isReadyLine recognises the ready line in slog's JSON and text formats.
func isReadyLine(s string) bool {
	if strings.HasPrefix(s, "{") {
		var rec struct {
			Msg string `json:"msg"`
		}
		return json.Unmarshal([]byte(s), &rec) == nil && rec.Msg == ReadyMsg
	}
	return strings.Contains(s, `msg="`+ReadyMsg+`"`)
}

// labelledLog is one node's log for formatTails.
type labelledLog struct {
	Label string
	Log   string
}

// formatTails renders the last n lines of each log under a header naming
// its node, in the order given.
func formatTails(logs []labelledLog, n int) string {
	var b strings.Builder
	for _, l := range logs {
		lines := strings.Split(strings.TrimRight(l.Log, "\n"), "\n")
		if l.Log == "" {
			lines = nil
		}
		skipped := 0
		if len(lines) > n {
			skipped = len(lines) - n
			lines = lines[skipped:]
		}
		fmt.Fprintf(&b, "----- node %s: ", l.Label)
		switch {
		case len(lines) == 0:
			b.WriteString("no output -----\n")
			continue
		case skipped > 0:
			fmt.Fprintf(&b, "last %d of %d lines -----\n", len(lines), len(lines)+skipped)
		default:
			fmt.Fprintf(&b, "%d lines -----\n", len(lines))
		}
		for _, line := range lines {
			b.WriteString("  ")
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
