package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

// writeTimeout bounds one write to a live tail: a client that stops
// reading is dropped rather than holding the handler forever.
const writeTimeout = 10 * time.Second

// tailFilter selects the events a live tail shows.
type tailFilter struct {
	kind string
	// id matches the entity id exactly, or as a prefix when prefix is set.
	id     string
	prefix bool
}

func (f tailFilter) match(ev journal.Event) bool {
	kind, id, ok := strings.Cut(ev.Stream, "/")
	if !ok || f.kind != "" && kind != f.kind {
		return false
	}
	if f.id == "" {
		return true
	}
	if f.prefix {
		return strings.HasPrefix(id, f.id)
	}
	return id == f.id
}

// tailArgs parses a live tail's query: kind, id (a trailing "*" makes it
// a prefix, unless exact=1), last, from, and the Last-Event-ID an
// EventSource sends when it reconnects.
func (h *Handler) tailArgs(r *http.Request) (f tailFilter, from uint64, last int, err error) {
	q := r.URL.Query()
	f = tailFilter{kind: q.Get("kind"), id: q.Get("id")}
	if q.Get("exact") != "1" {
		f.id, f.prefix = strings.CutSuffix(f.id, "*")
	}
	switch {
	case len(f.kind) > 256 || strings.ContainsAny(f.kind, "/\x00"):
		return f, 0, 0, fmt.Errorf("kind %.40q is not an entity kind", f.kind)
	case len(f.id) > 1024 || strings.IndexByte(f.id, 0) >= 0:
		return f, 0, 0, fmt.Errorf("id %.40q is not an entity id", f.id)
	}
	last = h.cfg.TailBacklog
	if s := q.Get("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxBacklog {
			return f, 0, 0, fmt.Errorf("last %q: want a number from 0 to %d", s, maxBacklog)
		}
		last = n
	}
	if s := q.Get("from"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return f, 0, 0, fmt.Errorf("from %q: want a global position", s)
		}
		from = n
	}
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			from = n + 1 // resume after the last event the client saw
		}
	}
	return f, from, last, nil
}

// serveTail streams the global log as Server-Sent Events: one message per
// event (its id is the event's global position, its data the event as
// `troupe events tail` prints it), "skipped" messages when the rate cap
// drops events, and comments as heartbeats.
func (h *Handler) serveTail(w http.ResponseWriter, r *http.Request) {
	f, from, last, err := h.tailArgs(r)
	if err != nil {
		h.jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	rc := http.NewResponseController(w)
	// The write deadlines set below stay on the connection: clear them
	// for the requests that may follow on it.
	defer rc.SetWriteDeadline(time.Time{})
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: 2000\n: tail\n\n")); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		h.log.Error("live tail cannot flush", "err", err)
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	events := make(chan journal.Event, 256)
	var tailErr error
	go func() {
		defer close(events)
		tailErr = h.cfg.Source.Tail(ctx, f.kind, from, last, func(ev journal.Event) error {
			if !f.match(ev) {
				return nil
			}
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// The tail goroutine ends once ctx is cancelled; wait for it.
	defer func() {
		cancel()
		for range events {
		}
	}()

	var (
		buf         bytes.Buffer
		lastWrite   = time.Now()
		windowStart = lastWrite
		sent        int // events sent in the current one-second window
		skipped     int // events dropped by the rate cap, not yet reported
	)
	write := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		lastWrite = time.Now()
		return err == nil
	}
	flush := func() bool { return rc.Flush() == nil }
	reportSkipped := func() bool {
		if skipped == 0 {
			return true
		}
		fmt.Fprintf(&buf, "event: skipped\ndata: {\"skipped\":%d,\"max_rate\":%d}\n\n", skipped, h.cfg.TailMaxRate)
		skipped = 0
		return write() && flush()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if tailErr != nil && ctx.Err() == nil {
					b, _ := json.Marshal(map[string]string{"error": tailErr.Error()})
					fmt.Fprintf(&buf, "event: failed\ndata: %s\n\n", b)
					write()
					flush()
				}
				return
			}
			now := time.Now()
			if now.Sub(windowStart) >= time.Second {
				windowStart, sent = now, 0
				if !reportSkipped() {
					return
				}
			}
			if sent >= h.cfg.TailMaxRate {
				skipped++
				continue
			}
			sent++
			b, _ := json.Marshal(NewEventJSON(ev))
			fmt.Fprintf(&buf, "id: %d\ndata: %s\n\n", ev.Position, b)
			if !write() {
				return
			}
			// Flush once the burst is written, not after every event.
			if len(events) == 0 && !flush() {
				return
			}
		case now := <-tick.C:
			if skipped > 0 && now.Sub(windowStart) >= time.Second {
				windowStart, sent = now, 0
				if !reportSkipped() {
					return
				}
			}
			if now.Sub(lastWrite) >= h.cfg.Heartbeat {
				buf.WriteString(": keep-alive\n\n")
				if !write() || !flush() {
					return
				}
			}
		case <-ctx.Done():
			return
		}
	}
}
