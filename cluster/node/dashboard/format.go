package dashboard

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/troupe-dev/troupe/journal"
)

// EventJSON is one event as `troupe events replay` and `troupe events tail`
// print it (their default, JSON, format) and as the dashboard shows it: the
// entity page's JSON lines and each message of the live tail. One type, so
// that the CLI and the dashboard cannot drift apart.
type EventJSON struct {
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	// Partition is omitted for partition 0 (a single node's only one).
	Partition int               `json:"partition,omitempty"`
	Position  uint64            `json:"position"`
	Time      string            `json:"time"`
	Type      string            `json:"type"`
	Payload   json.RawMessage   `json:"payload,omitempty"`
	Tags      []string          `json:"tags,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// NewEventJSON is ev as an EventJSON.
func NewEventJSON(ev journal.Event) EventJSON {
	return EventJSON{ev.Stream, ev.Sequence, ev.Partition, ev.Position, ev.Time.UTC().Format(time.RFC3339Nano), ev.Type, PayloadJSON(ev.Payload), ev.Tags, ev.Metadata}
}

// PayloadJSON shows a payload as the JSON it was appended as, or as a JSON
// string when it is text, or base64 when it is neither.
func PayloadJSON(p []byte) json.RawMessage {
	if len(p) == 0 {
		return nil
	}
	if json.Valid(p) {
		return p
	}
	if utf8.Valid(p) {
		b, _ := json.Marshal(string(p))
		return b
	}
	b, _ := json.Marshal(p) // base64
	return b
}

func formatMeta(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

// formatRate prints a per-second rate with sensible precision.
func formatRate(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v < 10000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k"
}

func formatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
	}
	return d.Round(10 * time.Millisecond).String()
}

// formatUptime prints a duration as days, hours, minutes and seconds, the
// two largest units only.
func formatUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	days := int(d / (24 * time.Hour))
	h := int(d/time.Hour) % 24
	m := int(d/time.Minute) % 60
	s := int(d/time.Second) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func formatAgo(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatUptime(now.Sub(t)) + " ago"
}

// spark is a sparkline: an SVG path over a fixed view box.
type spark struct {
	Path   string
	Max    float64
	Last   float64
	Points int
}

const sparkW, sparkH = 240.0, 40.0

func newSpark(series []float64) spark {
	s := spark{Points: len(series)}
	if len(series) < 2 {
		return s
	}
	for _, v := range series {
		s.Max = math.Max(s.Max, v)
	}
	s.Last = series[len(series)-1]
	top := s.Max
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	step := sparkW / float64(len(series)-1)
	for i, v := range series {
		x := float64(i) * step
		y := sparkH - 1 - (v/top)*(sparkH-2)
		if i == 0 {
			b.WriteString("M")
		} else {
			b.WriteString(" L")
		}
		b.WriteString(strconv.FormatFloat(x, 'f', 1, 64) + " " + strconv.FormatFloat(y, 'f', 1, 64))
	}
	s.Path = b.String()
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
