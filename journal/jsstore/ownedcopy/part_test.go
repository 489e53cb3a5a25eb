package ownedcopy

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

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

// Chunks decode to the events put in them, at the sequences their key
// ends at; a value of format 1 (written before chunks) is one event.
func TestChunkFormat(t *testing.T) {
	var c chunk
	want := make([]journal.Event, 5)
	for i := range want {
		want[i] = journal.Event{Stream: "a/1", Sequence: uint64(10 + i), Position: uint64(100 + 2*i), Type: "T", Payload: fmt.Appendf(nil, "p%d", i), Time: time.Unix(0, int64(i)).UTC()}
		if i == 2 {
			want[i].Tags, want[i].Metadata = []string{"x"}, map[string]string{"k": "v"}
		}
		c.add(&want[i])
	}
	if c.last != (head{seq: 14, pos: 108, time: 4}) {
		t.Fatalf("chunk head %+v", c.last)
	}
	v := c.value()
	got, err := decodeChunk(v, "a/1", 14, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n %+v\nwant\n %+v", got, want)
	}
	if last, err := lastOfChunk(v); err != nil || !bytes.Equal(last, encodeEvent(&want[4])) {
		t.Fatalf("last of chunk: %x, %v", last, err)
	}
	if _, err := decodeChunk(v, "a/1", 3, 0); err == nil {
		t.Fatal("a chunk of 5 events ending at sequence 3 decoded")
	}
	if _, err := decodeChunk(v[:len(v)-1], "a/1", 14, 0); err == nil {
		t.Fatal("a truncated chunk decoded")
	}
	if _, err := decodeChunk(append(v[:len(v):len(v)], 0), "a/1", 14, 0); err == nil {
		t.Fatal("a chunk with a trailing byte decoded")
	}

	old := encodeEvent(&want[0])
	got, err = decodeChunk(old, "a/1", 7, 0)
	if err != nil || len(got) != 1 || got[0].Sequence != 7 || got[0].Position != 100 {
		t.Fatalf("format 1: %+v, %v", got, err)
	}
	if last, err := lastOfChunk(old); err != nil || !bytes.Equal(last, old) {
		t.Fatalf("format 1, last: %x, %v", last, err)
	}
}

// Bytes that do not decode as a chunk give an error, never a panic; a
// chunk that decodes encodes again to the same events.
func FuzzDecodeChunk(f *testing.F) {
	var c chunk
	for i := range 3 {
		c.add(&journal.Event{Sequence: uint64(i + 1), Position: uint64(i + 1), Type: "T", Payload: []byte("p")})
	}
	f.Add(c.value(), uint64(3))
	f.Add([]byte{2, 0, 1, 0, 0, 0, 1, 1}, uint64(1))
	f.Add([]byte{2, 0xff, 0xff}, uint64(9))
	f.Add([]byte{1}, uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, last uint64) {
		got, err := decodeChunk(b, "a/1", last, 0)
		if err != nil {
			return
		}
		if len(got) == 0 || got[len(got)-1].Sequence != last {
			t.Fatalf("%d events, the last at %v; want it at %d", len(got), got, last)
		}
		var again chunk
		for i := range got {
			again.add(&got[i])
		}
		back, err := decodeChunk(again.value(), "a/1", last, 0)
		if err != nil || len(back) != len(got) {
			t.Fatalf("re-encode: %d events, %v; want %d", len(back), err, len(got))
		}
		for i := range got {
			if back[i].Sequence != got[i].Sequence || back[i].Position != got[i].Position || string(back[i].Payload) != string(got[i].Payload) || back[i].Type != got[i].Type {
				t.Fatalf("event %d: %+v, want %+v", i, back[i], got[i])
			}
		}
	})
}
