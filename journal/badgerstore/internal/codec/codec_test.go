package codec

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/journal"
)

func TestEventRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   journal.Event
	}{
		{name: "minimal", ev: journal.Event{Type: "Opened"}},
		{name: "payload", ev: journal.Event{Type: "Deposited", Payload: []byte(`{"amount":5}`)}},
		{name: "everything", ev: journal.Event{
			Type: "Withdrawn", ContentType: "application/x-protobuf", Payload: bytes.Repeat([]byte{0xff, 0}, 300),
			Tags: []string{"vip", "eu"}, Metadata: map[string]string{"correlation": "c1", "causation": "", "a": "b"},
		}},
		{name: "long type", ev: journal.Event{Type: strings.Repeat("T", 300)}},
	}
	var d Decoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendEvent([]byte("prefix"), &tt.ev)[len("prefix"):]
			if n := EventSize(&tt.ev); n != len(b) {
				t.Fatalf("EventSize = %d, envelope of %d bytes", n, len(b))
			}
			SealEvent(b, 42, 1_700_000_000_123_456_789)
			var got journal.Event
			if err := d.DecodeEvent(b, &got); err != nil {
				t.Fatal(err)
			}
			want := tt.ev
			want.Position = 42
			if got.Time.UnixNano() != 1_700_000_000_123_456_789 {
				t.Fatalf("time %v", got.Time)
			}
			got.Time = want.Time
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			if pos, err := EventPosition(b); err != nil || pos != 42 {
				t.Fatalf("EventPosition = %d, %v", pos, err)
			}
		})
	}
}

func TestEventCorruption(t *testing.T) {
	ev := journal.Event{Type: "Deposited", Payload: []byte("hello"), Tags: []string{"x"}}
	good := AppendEvent(nil, &ev)
	SealEvent(good, 1, 1)
	var d Decoder
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		var e journal.Event
		if err := d.DecodeEvent(b, &e); !errors.Is(err, ErrValue) {
			t.Fatalf("flip of byte %d: err = %v, want ErrValue", i, err)
		}
	}
	for n := range len(good) {
		var e journal.Event
		if err := d.DecodeEvent(good[:n], &e); !errors.Is(err, ErrValue) {
			t.Fatalf("truncated to %d: err = %v", n, err)
		}
	}
}

func TestChunkRoundTrip(t *testing.T) {
	type item struct {
		pos    uint64
		stream string
		seq    uint64
	}
	items := []item{{10, "a/1", 1}, {11, "a/1", 2}, {15, "b/2", 7}, {16, "a/1", 3}, {1 << 40, "c/x", 1 << 50}}
	var w ChunkWriter
	for round := range 2 {
		w.Reset()
		for _, it := range items {
			w.Add(it.pos, it.stream, it.seq)
		}
		b := w.Bytes()
		r, err := NewChunkReader(b)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if r.Len() != len(items) {
			t.Fatalf("len %d", r.Len())
		}
		for _, want := range items {
			pos, s, seq, ok, err := r.Next()
			if !ok || err != nil || pos != want.pos || string(s) != want.stream || seq != want.seq {
				t.Fatalf("got %d %q %d %v %v, want %+v", pos, s, seq, ok, err, want)
			}
		}
		if _, _, _, ok, err := r.Next(); ok || err != nil {
			t.Fatalf("after end: %v %v", ok, err)
		}
	}
}

func TestSmallValues(t *testing.T) {
	m := StreamMeta{Tombstoned: true, Created: 5, LastSeq: 9, LastTime: 11, Deleted: 7}
	if got, err := DecodeStreamMeta(AppendStreamMeta(nil, m)); err != nil || got != m {
		t.Fatalf("meta %+v %v", got, err)
	}
	seq, ts, data, err := DecodeSnapshot(AppendSnapshot(nil, 7, 8, []byte("state")))
	if err != nil || seq != 7 || ts != 8 || string(data) != "state" {
		t.Fatalf("snapshot %d %d %q %v", seq, ts, data, err)
	}
	r := Idem{1, 2, 3, 4, []byte("ok")}
	if got, err := DecodeIdem(AppendIdem(nil, r)); err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("idem %+v %v", got, err)
	}
	s := Stats{1, 2, 3}
	if got, err := DecodeStats(AppendStats(nil, s)); err != nil || got != s {
		t.Fatalf("stats %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0, 0, 0}, bytes.Repeat([]byte{1}, 29)} {
		if _, err := DecodeStreamMeta(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("meta %x: %v", bad, err)
		}
		if _, err := DecodeStats(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("stats %x: %v", bad, err)
		}
		if _, _, _, err := DecodeSnapshot(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("snapshot %x: %v", bad, err)
		}
		if _, err := DecodeIdem(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("idem %x: %v", bad, err)
		}
	}
}

func TestKeyOrder(t *testing.T) {
	tests := []struct {
		name       string
		a, b       string
		seqA, seqB uint64
	}{
		{name: "numeric not lexical", a: "k/1", b: "k/1", seqA: 9, seqB: 10},
		{name: "byte boundary", a: "k/1", b: "k/1", seqA: 255, seqB: 256},
		{name: "prefix stream first", a: "k/1", b: "k/10", seqA: 1 << 60, seqB: 1},
		{name: "stream order wins", a: "a/9", b: "b/0", seqA: 5, seqB: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := EventKey(nil, tt.a, tt.seqA), EventKey(nil, tt.b, tt.seqB)
			if bytes.Compare(ka, kb) >= 0 {
				t.Fatalf("%x !< %x", ka, kb)
			}
		})
	}
	if !bytes.HasPrefix(EventKey(nil, "k/1", 3), EventPrefix(nil, "k/1")) || bytes.HasPrefix(EventKey(nil, "k/10", 3), EventPrefix(nil, "k/1")) {
		t.Fatal("event prefix matches the wrong streams")
	}
	if !bytes.HasPrefix(StreamKey(nil, "acc/1"), StreamsPrefix(nil, "acc")) || bytes.HasPrefix(StreamKey(nil, "accx/1"), StreamsPrefix(nil, "acc")) {
		t.Fatal("streams prefix matches the wrong kinds")
	}
}

func FuzzDecodeEvent(f *testing.F) {
	ev := journal.Event{Type: "T", ContentType: "c", Payload: []byte("p"), Tags: []string{"t"}, Metadata: map[string]string{"k": "v"}}
	b := AppendEvent(nil, &ev)
	SealEvent(b, 3, 4)
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 22))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		var e journal.Event
		// Also decode b with a valid checksum, or the fuzzer rarely gets
		// past it.
		_ = d.DecodeEvent(withCRC(b), &e)
		if err := d.DecodeEvent(b, &e); err != nil {
			if !errors.Is(err, ErrValue) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What decodes must encode back to the same bytes.
		again := AppendEvent(nil, &e)
		if n := EventSize(&e); n != len(again) {
			t.Fatalf("EventSize = %d, envelope of %d bytes", n, len(again))
		}
		SealEvent(again, e.Position, e.Time.UnixNano())
		if !bytes.Equal(again, b) {
			// Empty tag/metadata counts and unsorted metadata re-encode
			// differently; decoding must still agree.
			var e2 journal.Event
			if err := d.DecodeEvent(again, &e2); err != nil || !reflect.DeepEqual(e2.Payload, e.Payload) || e2.Type != e.Type {
				t.Fatalf("re-encode differs: %v", err)
			}
		}
	})
}

func FuzzDecodeChunk(f *testing.F) {
	var w ChunkWriter
	w.Add(1, "a/b", 1)
	w.Add(2, "a/b", 2)
	w.Add(9, "c/d", 1)
	f.Add(bytes.Clone(w.Bytes()))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0]&1 == 1 {
			b = withCRC(b[1:]) // get past the checksum
		}
		r, err := NewChunkReader(b)
		if err != nil {
			if !errors.Is(err, ErrValue) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var last uint64
		for i := 0; ; i++ {
			pos, s, seq, ok, err := r.Next()
			if err != nil {
				if !errors.Is(err, ErrValue) {
					t.Fatalf("untyped error %v", err)
				}
				return
			}
			if !ok {
				if i != r.Len() {
					t.Fatalf("ended after %d of %d items", i, r.Len())
				}
				return
			}
			if pos <= last || len(s) == 0 || seq == 0 {
				t.Fatalf("bad item %d %q %d after %d", pos, s, seq, last)
			}
			last = pos
		}
	})
}

func FuzzDecodeSmallValues(f *testing.F) {
	f.Add(AppendStreamMeta(nil, StreamMeta{Created: 1}))
	f.Add(AppendSnapshot(nil, 1, 2, []byte("x")))
	f.Add(AppendIdem(nil, Idem{Reply: []byte("r")}))
	f.Add(AppendStats(nil, Stats{1, 2, 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, err := range []error{
			func() error { _, err := DecodeStreamMeta(b); return err }(),
			func() error { _, _, _, err := DecodeSnapshot(b); return err }(),
			func() error { _, err := DecodeIdem(b); return err }(),
			func() error { _, err := DecodeStats(b); return err }(),
		} {
			if err != nil && !errors.Is(err, ErrValue) {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}

// FuzzEventKey checks the round trip of event keys and that key order is
// (stream, sequence) order.
func FuzzEventKey(f *testing.F) {
	f.Add("a/1", uint64(1), "a/1", uint64(2))
	f.Add("a/1", uint64(255), "a/10", uint64(0))
	f.Add("k/x", uint64(1)<<63, "k/x\x01", uint64(1))
	f.Fuzz(func(t *testing.T, s1 string, q1 uint64, s2 string, q2 uint64) {
		if s1 == "" || s2 == "" || strings.IndexByte(s1, 0) >= 0 || strings.IndexByte(s2, 0) >= 0 {
			return
		}
		k1, k2 := EventKey(nil, s1, q1), EventKey(nil, s2, q2)
		for _, c := range []struct {
			k []byte
			s string
			q uint64
		}{{k1, s1, q1}, {k2, s2, q2}} {
			s, q, err := ParseEventKey(c.k)
			if err != nil || s != c.s || q != c.q {
				t.Fatalf("round trip of %q/%d: %q %d %v", c.s, c.q, s, q, err)
			}
		}
		want := cmp.Or(strings.Compare(s1, s2), cmp.Compare(q1, q2))
		if got := bytes.Compare(k1, k2); got != want {
			t.Fatalf("order of (%q,%d) vs (%q,%d): keys %d, want %d", s1, q1, s2, q2, got, want)
		}
		i1, i2 := IndexKey(nil, PrefixTag, s1, q1), IndexKey(nil, PrefixTag, s2, q2)
		if got := bytes.Compare(i1, i2); got != want {
			t.Fatalf("index order %d, want %d", got, want)
		}
		if n, p, err := ParseIndexKey(i1, PrefixTag); err != nil || n != s1 || p != q1 {
			t.Fatalf("index round trip: %q %d %v", n, p, err)
		}
	})
}

// FuzzParseKey feeds arbitrary bytes to the key parsers.
func FuzzParseKey(f *testing.F) {
	f.Add(EventKey(nil, "a/b", 1))
	f.Add(LogKey(nil, 5))
	f.Add(StreamKey(nil, "a/b"))
	f.Add(binary.BigEndian.AppendUint64([]byte{PrefixEvent, 0}, 1))
	f.Fuzz(func(t *testing.T, k []byte) {
		if s, q, err := ParseEventKey(k); err == nil {
			if !bytes.Equal(EventKey(nil, s, q), k) {
				t.Fatalf("event key %x re-encodes differently", k)
			}
		} else if !errors.Is(err, ErrKey) {
			t.Fatal(err)
		}
		if p, err := ParseLogKey(k); err == nil && !bytes.Equal(LogKey(nil, p), k) {
			t.Fatalf("log key %x", k)
		}
		if s, err := ParseStreamKey(k); err == nil && !bytes.Equal(StreamKey(nil, s), k) {
			t.Fatalf("stream key %x", k)
		}
	})
}

// withCRC returns b followed by its CRC-32C, as the encoders write it.
func withCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(b), crc32.Checksum(b, castagnoli))
}
