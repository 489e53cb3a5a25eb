package ownedcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
)

// Key layout of the local copy (all integers big-endian):
//
//	'v'                                  format version (uint32, 1)
//	'i' <partition u32>                  the partition's incarnation (uint64)
//	'l' <partition u32>                  the identity of the partition's stream (jsstore Identity)
//	'd' <partition u32> <inc u64> 'h' <stream>             head: seq, position, time
//	'd' <partition u32> <inc u64> 'e' <stream> 0x00 <seq>  a chunk: the stream's events up to seq
//	'd' <partition u32> <inc u64> 's' <stream>             snapshot: seq, time, data
//
// Stream ids hold no NUL (journal.ParseStream), so <stream> 0x00 ends one
// stream's events. A chunk holds consecutive events of its stream, the
// last one at the key's sequence, and the chunks of a stream follow each
// other without a hole from sequence 1: one key for several events, so
// the copy's Badger writes (a skiplist insert, a log entry, later a table
// entry per key) are paid per chunk, not per event. A value of format 1
// (copies written before chunks) is one event. Dropping a partition
// moves it to a new incarnation (one write) and deletes the old one's
// keys in the background.
const formatVersion = 1

var (
	versionKey = []byte{'v'}
	// errGap is a local write that would leave a hole in a stream's
	// prefix: the copy is behind, the write is skipped and the stream's
	// mark dropped.
	errGap = errors.New("ownedcopy: the local copy is behind the write")
	// errMissing is an event under the local head that is not there.
	errMissing = errors.New("ownedcopy: an event under the local head is missing")
)

func incKey(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{'i'}, uint32(n))
}

func identityKey(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{'l'}, uint32(n))
}

// partPrefix is the prefix of every data key of partition n.
func partPrefix(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{'d'}, uint32(n))
}

func dataKey(n int, inc uint64, typ byte, stream string, extra int) []byte {
	b := make([]byte, 0, 14+len(stream)+extra)
	b = binary.BigEndian.AppendUint32(append(b, 'd'), uint32(n))
	b = binary.BigEndian.AppendUint64(b, inc)
	return append(append(b, typ), stream...)
}

func snapKey(n int, inc uint64, stream string) []byte { return dataKey(n, inc, 's', stream, 0) }

func eventPrefix(n int, inc uint64, stream string) []byte {
	return append(dataKey(n, inc, 'e', stream, 9), 0)
}

func eventKey(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix[:len(prefix):len(prefix)], seq)
}

// head is a stream's last local event. It is not stored: it is the last
// event key of the stream (writes keep the events a prefix 1..head), so
// an append writes one key per event and nothing else.
type head struct {
	seq, pos uint64
	time     int64 // unix nanoseconds
}

// getHead reads a stream's head in txn from the last key under its event
// prefix (zero: no local events). In a read-write txn it sees the txn's
// own writes; such a txn may have one iterator open at a time.
func getHead(txn *badger.Txn, prefix []byte) (head, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	it.Seek(eventKey(prefix, math.MaxUint64))
	if !it.Valid() {
		return head{}, nil
	}
	item := it.Item()
	k := item.Key()
	if len(k) != len(prefix)+8 {
		return head{}, fmt.Errorf("ownedcopy: event key %x of %d bytes under a prefix of %d", k, len(k), len(prefix))
	}
	h := head{seq: binary.BigEndian.Uint64(k[len(prefix):])}
	err := item.Value(func(v []byte) error {
		last, err := lastOfChunk(v)
		if err == nil {
			h.pos, h.time, err = decodePosTime(last)
		}
		return err
	})
	return h, err
}

const (
	// maxChunkEvents and maxChunkBytes bound a chunk: a local read of one
	// event decodes its whole chunk.
	maxChunkEvents = 64
	maxChunkBytes  = 32 << 10
	chunkFormat    = 2
	chunkHeader    = 3 // format byte, event count (uint16)
)

// chunk builds a chunk value: the format byte, the event count (uint16),
// then each event's encoding (encodeEvent) after its length (uint32).
type chunk struct {
	b    []byte
	n    int
	last head // the head it leaves
}

func (c *chunk) add(ev *journal.Event) {
	if c.b == nil {
		c.b = make([]byte, chunkHeader, chunkHeader+maxChunkBytes/8)
		c.b[0] = chunkFormat
	}
	c.b = appendEvent(c.b, ev)
	c.n++
	c.last = head{seq: ev.Sequence, pos: ev.Position, time: ev.Time.UnixNano()}
}

func (c *chunk) full() bool { return c.n >= maxChunkEvents || len(c.b) >= maxChunkBytes }

// value returns the chunk's value, and empties c for the next chunk.
func (c *chunk) value() []byte {
	binary.BigEndian.PutUint16(c.b[1:], uint16(c.n))
	v := c.b
	c.b, c.n = nil, 0
	return v
}

// appendEvent appends an event's encoding to a chunk, after its length
// (uint32), which is written once the encoding is there.
func appendEvent(b []byte, ev *journal.Event) []byte {
	start := len(b)
	b = encodeEventTo(append(b, 0, 0, 0, 0), ev)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// chunkEvents calls f with each encoded event of a chunk value, in order,
// and returns how many there were. A value of format 1 is one event.
func chunkEvents(v []byte, f func(i int, ev []byte) error) (int, error) {
	if len(v) > 0 && v[0] == 1 {
		return 1, f(0, v)
	}
	if len(v) < chunkHeader || v[0] != chunkFormat {
		return 0, errors.New("ownedcopy: chunk of an unknown format")
	}
	n := int(binary.BigEndian.Uint16(v[1:]))
	if n == 0 {
		return 0, errors.New("ownedcopy: empty chunk")
	}
	rest := v[chunkHeader:]
	for i := range n {
		if len(rest) < 4 || uint64(binary.BigEndian.Uint32(rest)) > uint64(len(rest)-4) {
			return 0, fmt.Errorf("ownedcopy: chunk event %d of %d: %w", i, n, errShort)
		}
		k := int(binary.BigEndian.Uint32(rest))
		if err := f(i, rest[4:4+k:4+k]); err != nil {
			return 0, err
		}
		rest = rest[4+k:]
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("ownedcopy: chunk of %d events: %d bytes after them", n, len(rest))
	}
	return n, nil
}

// lastOfChunk is the encoding of a chunk's last event.
func lastOfChunk(v []byte) ([]byte, error) {
	var last []byte
	_, err := chunkEvents(v, func(_ int, ev []byte) error {
		last = ev
		return nil
	})
	return last, err
}

// decodeChunk decodes a chunk of stream whose last event is at sequence
// last, in partition n. The payloads alias v, which the caller owns (a
// copy of Badger's value).
func decodeChunk(v []byte, stream string, last uint64, n int) ([]journal.Event, error) {
	count := 1
	if len(v) >= chunkHeader && v[0] == chunkFormat {
		count = int(binary.BigEndian.Uint16(v[1:]))
	}
	if uint64(count) > last {
		return nil, fmt.Errorf("ownedcopy: %s: a chunk of %d events ending at sequence %d", stream, count, last)
	}
	first := last - uint64(count) + 1
	evs := make([]journal.Event, 0, min(count, len(v)/5)) // an event takes 5 bytes or more
	var derr error
	_, err := chunkEvents(v, func(i int, b []byte) error {
		ev, err := decodeEvent(b, stream, first+uint64(i), n)
		if err != nil {
			derr = err
			return err
		}
		evs = append(evs, ev)
		return nil
	})
	switch {
	case derr != nil:
		return nil, derr
	case err != nil:
		return nil, fmt.Errorf("%w (stream %s, up to sequence %d)", err, stream, last)
	}
	return evs, nil
}

// decodePosTime decodes the position and time of an encoded event.
func decodePosTime(b []byte) (uint64, int64, error) {
	if len(b) == 0 || b[0] != 1 {
		return 0, 0, errors.New("ownedcopy: event of an unknown format")
	}
	d := decoder{b: b[1:]}
	pos, t := d.uvarint(), d.varint()
	if d.err != nil {
		return 0, 0, fmt.Errorf("ownedcopy: event: %w", d.err)
	}
	return pos, t, nil
}

// encodeEvent encodes what the key does not hold of an event: a format
// byte, position, time, type, content type, tags, metadata, then the
// payload to the end.
func encodeEvent(ev *journal.Event) []byte {
	return encodeEventTo(make([]byte, 0, eventSize(ev)), ev)
}

// eventSize is the size of an event's encoding.
func eventSize(ev *journal.Event) int {
	n := 1 + uvarintLen(ev.Position) + varintLen(ev.Time.UnixNano()) + strLen(ev.Type) + strLen(ev.ContentType) +
		uvarintLen(uint64(len(ev.Tags))) + uvarintLen(uint64(len(ev.Metadata))) + len(ev.Payload)
	for _, t := range ev.Tags {
		n += strLen(t)
	}
	for k, v := range ev.Metadata {
		n += strLen(k) + strLen(v)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

func strLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

// encodeEventTo appends an event's encoding to b.
func encodeEventTo(b []byte, ev *journal.Event) []byte {
	b = append(b, 1)
	b = binary.AppendUvarint(b, ev.Position)
	b = binary.AppendVarint(b, ev.Time.UnixNano())
	b = appendString(b, ev.Type)
	b = appendString(b, ev.ContentType)
	b = binary.AppendUvarint(b, uint64(len(ev.Tags)))
	for _, t := range ev.Tags {
		b = appendString(b, t)
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Metadata)))
	for k, v := range ev.Metadata {
		b = appendString(appendString(b, k), v)
	}
	return append(b, ev.Payload...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeEvent decodes a local event of stream at seq in partition n. The
// payload aliases b, which the caller owns (a copy of Badger's value).
func decodeEvent(b []byte, stream string, seq uint64, n int) (journal.Event, error) {
	d := decoder{b: b}
	if len(b) == 0 || b[0] != 1 {
		return journal.Event{}, fmt.Errorf("ownedcopy: event %s/%d: unknown format", stream, seq)
	}
	d.b = d.b[1:]
	ev := journal.Event{Stream: stream, Sequence: seq, Partition: n}
	ev.Position = d.uvarint()
	ev.Time = time.Unix(0, d.varint()).UTC()
	ev.Type = d.str()
	ev.ContentType = d.str()
	if k := d.count(); k > 0 {
		ev.Tags = make([]string, k)
		for i := range ev.Tags {
			ev.Tags[i] = d.str()
		}
	}
	if k := d.count(); k > 0 {
		ev.Metadata = make(map[string]string, k)
		for range k {
			key := d.str()
			ev.Metadata[key] = d.str()
		}
	}
	if d.err != nil {
		return journal.Event{}, fmt.Errorf("ownedcopy: event %s/%d: %w", stream, seq, d.err)
	}
	ev.Payload = d.b
	return ev, nil
}

type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count is a length that must fit in what is left (each element takes at
// least a byte), so a corrupt count cannot make a huge allocation.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

// snapshot value: seq, time, data.
func encodeSnapshot(s journal.Snapshot) []byte {
	b := make([]byte, 0, 16+len(s.Data))
	b = binary.BigEndian.AppendUint64(b, s.Sequence)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Time.UnixNano()))
	return append(b, s.Data...)
}

func decodeSnapshot(stream string, b []byte) (journal.Snapshot, error) {
	if len(b) < 16 {
		return journal.Snapshot{}, fmt.Errorf("ownedcopy: snapshot of %q: %d bytes", stream, len(b))
	}
	return journal.Snapshot{
		Stream: stream, Sequence: binary.BigEndian.Uint64(b),
		Time: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))).UTC(), Data: b[16:],
	}, nil
}
