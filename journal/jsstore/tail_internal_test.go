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
