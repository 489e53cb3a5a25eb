package jsstore

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/troupe-dev/troupe/journal"
)

// tailMax bounds the events a partition's tail cache keeps (up to a
// quarter more between trims); its bytes are bounded too (tail.maxBytes,
// the partition's share of Config.TailCacheBytes).
const tailMax = 4096

// tailEventOverhead is what a cached event costs beyond its contents (the
// journal.Event struct, slice and map headers, and the stream id's
// string), counted against tail.maxBytes.
const tailEventOverhead = 160

// tailFill bounds the events one fill of the tail cache reads.
const tailFill = 1024

// tail caches a partition's latest events as read from the stream: every
// event with a position in (lo, upto], in order, the last at hi (upto may
// lie past hi: positions known to hold no event, such as an idempotency
// record's). Every projection of a node reads the same recent events of
// each partition (ReadAll, one goroutine per projection and partition);
// with the cache one of them reads a stretch from JetStream and the
// others take it from memory, instead of each asking JetStream for every
// event.
//
// It grows only at its end, with events known to follow what it holds
// with nothing between: a read of every event subject that starts right
// after it (a replica answers with a prefix of the committed log, see
// scan), the partition watcher's next delivery (push), or this node's
// own batch, fenced at a position the cache reaches (commitSome). So it
// has no gap.
type tail struct {
	fill sync.Mutex // one fill at a time; the others wait and then read the cache

	mu           sync.Mutex
	lo, hi, upto uint64
	evs          []journal.Event // positions in (lo, hi], ascending
	bytes        int             // the size of evs, as cachedSize counts it
	maxBytes     int             // keep at most this many bytes (up to a quarter more between trims); 0: no bound
}

// cachedSize is the memory an event takes in the cache, about.
func cachedSize(e *journal.Event) int {
	return eventSize(e) + len(e.Stream) + tailEventOverhead
}

// covers reports whether the cache holds every event from position from
// up to its end, and its end is at or after from.
func (t *tail) covers(from uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.evs) > 0 && from > t.lo && from <= t.hi
}

// take returns the cached events with position >= from matching f (at
// most limit, limit <= 0: all), and whether the cache still covered from.
func (t *tail) take(from uint64, match func(*journal.Event) bool, limit int) ([]journal.Event, uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.evs) == 0 || from <= t.lo || from > t.hi {
		return nil, 0, false
	}
	i, _ := slices.BinarySearchFunc(t.evs, from, func(e journal.Event, pos uint64) int {
		switch {
		case e.Position < pos:
			return -1
		case e.Position > pos:
			return 1
		}
		return 0
	})
	var out []journal.Event
	for _, e := range t.evs[i:] {
		if match(&e) {
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				return out, e.Position, true
			}
		}
	}
	return out, t.hi, true
}

// extend adds events read from position from on (every event subject,
// in order), complete through position through: at the cache's end when
// it reaches from, else as a new cache that starts at from.
func (t *tail) extend(from uint64, evs []journal.Event, through uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.evs) > 0 && (from <= t.lo || from-1 > t.upto) {
		// It does not connect: start again, and let the dropped events'
		// payloads go.
		clear(t.evs)
		t.evs, t.lo, t.hi, t.upto, t.bytes = t.evs[:0], 0, 0, 0, 0
	}
	t.addLocked(from-1, evs, through)
}

// add adds evs (ascending), given that they are the only events with a
// position in (after, through]: when the cache reaches after, or is
// empty. Otherwise it leaves the cache as it is, and readers fill it.
func (t *tail) add(after uint64, evs []journal.Event, through uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(after, evs, through)
}

// push adds ev, given that no event has a position between after and
// ev's (the partition watcher's next delivery).
func (t *tail) push(after uint64, ev journal.Event) {
	t.add(after, []journal.Event{ev}, ev.Position)
}

// addLocked is add; the caller holds t.mu.
func (t *tail) addLocked(after uint64, evs []journal.Event, through uint64) {
	switch {
	case len(t.evs) == 0:
		if len(evs) == 0 {
			return
		}
		t.lo, t.upto = after, after
	case t.upto < after:
		return // events may be missing before evs
	}
	for len(evs) > 0 && evs[0].Position <= t.upto {
		evs = evs[1:] // there already
	}
	if len(evs) > 0 {
		t.evs = append(t.evs, evs...)
		t.hi = evs[len(evs)-1].Position
		for i := range evs {
			t.bytes += cachedSize(&evs[i])
		}
	}
	t.upto = max(t.upto, through, t.hi)
	t.trim()
}

// trim drops the oldest events past tailMax, or past maxBytes, once they
// are a quarter of it: not one at a time, which would move the whole cache
// on every push. It keeps the newest event. The caller holds t.mu.
func (t *tail) trim() {
	n, b := 0, t.bytes // events to drop, and the bytes left after
	if over := len(t.evs) - tailMax; over >= tailMax/4 {
		for ; n < over; n++ {
			b -= cachedSize(&t.evs[n])
		}
	}
	if t.maxBytes > 0 && t.bytes > t.maxBytes+t.maxBytes/4 {
		for ; n < len(t.evs)-1 && b > t.maxBytes; n++ {
			b -= cachedSize(&t.evs[n])
		}
	}
	if n == 0 {
		return
	}
	t.lo, t.bytes = t.evs[n-1].Position, b
	t.evs = slices.Delete(t.evs, 0, n)
}

// copyEvent gives a reader its own event: readers may change an event's
// metadata (event sidecars do) without touching the cache.
func copyEvent(e journal.Event) journal.Event {
	if e.Metadata != nil {
		m := make(map[string]string, len(e.Metadata))
		for k, v := range e.Metadata {
			m[k] = v
		}
		e.Metadata = m
	}
	e.Tags = slices.Clone(e.Tags)
	return e
}

// matcher is f as a test of an event.
func matcher(f journal.Filter) func(*journal.Event) bool {
	switch {
	case f.Kind != "":
		prefix := f.Kind + "/"
		return func(e *journal.Event) bool { return strings.HasPrefix(e.Stream, prefix) }
	case f.Tag != "":
		return func(e *journal.Event) bool { return contains(e.Tags, f.Tag) }
	}
	return func(*journal.Event) bool { return true }
}

// readTail serves a ReadAll of partition n from position from through the
// tail cache, filling it from the stream as needed, up to head (the
// partition's last position when the read began). It either finishes the
// read (done: every matching event up to head or up to limit was
// yielded, or yield stopped, or an error was yielded), or hands it back
// at position next, from which the caller reads the stream itself (a
// position older than the cache; a fill that found nothing).
func (s *Store) readTail(ctx context.Context, n int, from, head uint64, f journal.Filter, limit int, yield func(journal.Event, error) bool) (next uint64, sent int, done bool) {
	t := &s.parts[n].tail
	match := matcher(f)
	for {
		if from > head {
			return 0, sent, true
		}
		evs, last, ok := t.take(from, match, limit-sent)
		if !ok {
			if t.older(from) {
				return from, sent, false
			}
			// The cache ends before from, or is empty: fill it from there.
			if !s.fillTail(ctx, n, from, head, yield) {
				return 0, sent, true // the error was yielded
			}
			if !t.covers(from) {
				return from, sent, false
			}
			continue
		}
		for _, e := range evs {
			if !yield(copyEvent(e), nil) {
				return 0, sent, true
			}
			sent++
		}
		if limit > 0 && sent >= limit || last >= head {
			return 0, sent, true
		}
		from = last + 1
	}
}

// older reports whether from is at or before the cache's start (with a
// non-empty cache): the cache cannot serve it, and a fill would not
// connect to it.
func (t *tail) older(from uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.evs) > 0 && from <= t.lo
}

// fillTail reads up to tailFill events of partition n from position from
// (every event subject, bounded by head) into the cache, one fill at a
// time. It yields a read error and returns false.
func (s *Store) fillTail(ctx context.Context, n int, from, head uint64, yield func(journal.Event, error) bool) bool {
	t := &s.parts[n].tail
	t.fill.Lock()
	defer t.fill.Unlock()
	if t.covers(from) {
		return true // filled meanwhile
	}
	var evs []journal.Event
	var rerr error
	s.scan(ctx, n, from, s.subject(n, "e.>"), bound{pos: head, exact: true, dense: true}, func(ev journal.Event, err error) (bool, bool) {
		if err != nil {
			rerr = err
			return false, false
		}
		evs = append(evs, ev)
		return true, true
	}, tailFill)
	if rerr != nil {
		yield(journal.Event{}, rerr)
		return false
	}
	// Fewer events than asked for: the read reached head.
	through := head
	if len(evs) >= tailFill {
		through = evs[len(evs)-1].Position
	}
	t.extend(from, evs, through)
	return true
}
