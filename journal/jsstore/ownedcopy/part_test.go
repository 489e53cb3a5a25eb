package ownedcopy

import (
	"errors"
	"fmt"
	"testing"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// The bookkeeping of writes: which answers drop a stream's mark, which
// taint the partition (an outcome that is not known), and when a taint
// is lifted (a write begun after it succeeded: the log settled it).
func TestWriteBookkeeping(t *testing.T) {
	f := jsstore.Fence{Partition: 0, Epoch: 1, Sequence: 3, Holder: "n"}
	unknown := &journal.UnknownOutcomeError{Stream: "a/1", Err: errors.New("timeout")}
	tests := []struct {
		name       string
		err        error
		drop       bool
		wantMarked bool
		wantUnsure bool
	}{
		{name: "success", wantMarked: true},
		{name: "local write failed", drop: true},
		{name: "conflict", err: &journal.ConflictError{Stream: "a/1", Expected: 1, Actual: 2}},
		{name: "fenced", err: &journal.FencedError{Partition: 0, Epoch: 1}},
		{name: "tombstoned", err: fmt.Errorf("append: %w", journal.ErrTombstoned)},
		{name: "unknown outcome", err: unknown, wantUnsure: true},
		{name: "timeout", err: errors.New("nats: timeout"), wantUnsure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &part{streams: map[string]*entry{}}
			e := p.ref("a/1")
			e.marked, e.mark = true, f
			p.unref("a/1", e)
			e2, pg := p.begin("a/1")
			if e2 != e {
				t.Fatal("another entry")
			}
			p.end(e, pg, tt.err, tt.drop, f)
			if got := p.complete(e, f); got != tt.wantMarked {
				t.Fatalf("marked %v, want %v", got, tt.wantMarked)
			}
			if p.unsure != tt.wantUnsure || e.refs != 0 || e.busy != 0 {
				t.Fatalf("unsure %v (want %v), refs %d, busy %d", p.unsure, tt.wantUnsure, e.refs, e.busy)
			}
		})
	}
	t.Run("taint lifted by a later write only", func(t *testing.T) {
		p := &part{streams: map[string]*entry{}}
		e, pg := p.begin("a/1")
		e2, pg2 := p.begin("a/2") // begun before the taint
		p.end(e, pg, unknown, false, f)
		p.end(e2, pg2, nil, false, f)
		if !p.unsure {
			t.Fatal("a write begun before the taint lifted it")
		}
		e3, pg3 := p.begin("a/3")
		p.end(e3, pg3, nil, false, f)
		if p.unsure {
			t.Fatal("a write begun after the taint did not lift it")
		}
	})
	t.Run("two writes at once drop the mark", func(t *testing.T) {
		p := &part{streams: map[string]*entry{}}
		e, pg := p.begin("a/1")
		e.marked, e.mark = true, f
		e2, pg2 := p.begin("a/1")
		if p.complete(e, f) {
			t.Fatal("still marked with two writes in flight")
		}
		p.end(e, pg, nil, false, f)
		p.end(e2, pg2, nil, false, f)
	})
}

// Local events decode to what was encoded; bytes that do not decode
// give an error, never a panic.
func FuzzDecodeEvent(f *testing.F) {
	ev := journal.Event{Position: 7, Type: "T", ContentType: "c", Payload: []byte("p"), Tags: []string{"a", "b"}, Metadata: map[string]string{"k": "v"}}
	f.Add(encodeEvent(&ev))
	f.Add([]byte{1})
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeEvent(b, "a/1", 1, 0)
		if err != nil {
			return
		}
		again, err := decodeEvent(encodeEvent(&got), "a/1", 1, 0)
		if err != nil || again.Type != got.Type || again.Position != got.Position || string(again.Payload) != string(got.Payload) {
			t.Fatalf("re-encode: %+v %v, want %+v", again, err, got)
		}
	})
}
