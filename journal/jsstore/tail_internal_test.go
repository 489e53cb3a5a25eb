package jsstore

import (
	"testing"

	"github.com/troupe-dev/troupe/journal"
)

// push takes an event only where the cache then still holds every event
// of its range: at its end, right after what it holds or after a stretch
// known to have no events; never past a possible gap, never twice.
func TestTailPush(t *testing.T) {
	ev := func(pos uint64) journal.Event { return journal.Event{Position: pos} }
	var c tail
	c.push(4, ev(7)) // empty: starts at 7, with nothing in (4, 7)
	if !c.covers(5) || !c.covers(7) || c.covers(4) || c.covers(8) {
		t.Fatalf("after the first push: lo %d hi %d", c.lo, c.hi)
	}
	c.push(7, ev(8))
	c.push(9, ev(12))  // nothing known of position 9: maybe a gap, refused
	c.push(8, ev(8))   // there already
	c.push(8, ev(11))  // nothing in (8, 11)
	c.push(10, ev(11)) // there already
	evs, last, ok := c.take(5, func(*journal.Event) bool { return true }, 0)
	if !ok || last != 11 || len(evs) != 3 || evs[0].Position != 7 || evs[1].Position != 8 || evs[2].Position != 11 {
		t.Fatalf("take: %v %d %v", evs, last, ok)
	}
	// It keeps at most tailMax and a quarter, dropping the oldest.
	for p := uint64(12); p < 12+tailMax*2; p++ {
		c.push(p-1, ev(p))
		if len(c.evs) > tailMax+tailMax/4 || c.evs[0].Position <= c.lo {
			t.Fatalf("at %d: %d events, lo %d, first %d", p, len(c.evs), c.lo, c.evs[0].Position)
		}
	}
	if c.hi != 11+tailMax*2 || c.covers(c.lo) || !c.covers(c.lo+1) || len(c.evs) < tailMax {
		t.Fatalf("after many pushes: lo %d hi %d, %d events", c.lo, c.hi, len(c.evs))
	}
}

// A partition's cache keeps to its share of TailCacheBytes (a quarter
// more between trims), dropping the oldest events and keeping the newest,
// and still answers every position it says it covers.
func TestTailKeepsToItsBytes(t *testing.T) {
	ev := func(pos uint64, size int) journal.Event {
		return journal.Event{Stream: "acct/1", Position: pos, Type: "Deposited", Payload: make([]byte, size)}
	}
	c := tail{maxBytes: 20_000}
	sum := func() int {
		n := 0
		for i := range c.evs {
			n += cachedSize(&c.evs[i])
		}
		return n
	}
	all := func(*journal.Event) bool { return true }
	for p := uint64(1); p <= 500; p++ {
		c.push(p-1, ev(p, 100+int(p%7)*150))
		if c.bytes != sum() {
			t.Fatalf("at %d: counted %d bytes, the events take %d", p, c.bytes, sum())
		}
		if c.bytes > c.maxBytes+c.maxBytes/4 {
			t.Fatalf("at %d: %d bytes, over %d and a quarter", p, c.bytes, c.maxBytes)
		}
		if c.hi != p || c.lo != c.evs[0].Position-1 {
			t.Fatalf("at %d: lo %d hi %d, first %d", p, c.lo, c.hi, c.evs[0].Position)
		}
		evs, last, ok := c.take(c.lo+1, all, 0)
		if !ok || last != p || uint64(len(evs)) != p-c.lo {
			t.Fatalf("at %d: take from %d: %d events to %d, %v", p, c.lo+1, len(evs), last, ok)
		}
	}
	if c.lo < 400 || c.covers(c.lo) {
		t.Fatalf("after 500 events of 100-1,000 bytes under a 20,000-byte bound: lo %d", c.lo)
	}
	// One event larger than the bound is kept, alone.
	c.push(500, ev(501, 50_000))
	if len(c.evs) != 1 || c.evs[0].Position != 501 || c.lo != 500 || c.bytes != sum() {
		t.Fatalf("after an event over the bound: %d events, lo %d, %d bytes", len(c.evs), c.lo, c.bytes)
	}
	// A fill that does not connect starts the cache again, and its count.
	c.extend(900, []journal.Event{ev(900, 10), ev(901, 10)}, 901)
	if len(c.evs) != 2 || c.lo != 899 || c.bytes != sum() {
		t.Fatalf("after a new start: %d events, lo %d, %d bytes (want %d)", len(c.evs), c.lo, c.bytes, sum())
	}
}
