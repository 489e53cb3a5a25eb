package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

// Version is the version byte every value starts with.
const Version byte = 1

// ErrValue is wrapped by errors about values that do not decode.
var ErrValue = errors.New("codec: malformed value")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	flagContentType = 1 << iota
	flagTags
	flagMetadata
)

// eventHeader is version, flags, position (8) and time (8).
const eventHeader = 18

// AppendEvent appends the envelope of e to dst, with the position and time
// left zero and room for the checksum; SealEvent fills them in. Stream and
// Sequence live in the key, not here.
//
//	version | flags | position u64 | unix nanos i64 | type
//	[content type] [tag count, tags] [metadata count, key/value pairs]
//	payload | crc32c
//
// Strings and the payload are uvarint length-prefixed. Metadata is written
// in key order so that equal events encode equally. dst grows at most once
// (Append runs this once per event, in the caller's goroutine).
func AppendEvent(dst []byte, e *journal.Event) []byte {
	dst = slices.Grow(dst, EventSize(e))
	var flags byte
	if e.ContentType != "" {
		flags |= flagContentType
	}
	if len(e.Tags) > 0 {
		flags |= flagTags
	}
	if len(e.Metadata) > 0 {
		flags |= flagMetadata
	}
	dst = append(dst, Version, flags)
	dst = append(dst, make([]byte, 16)...)
	dst = appendString(dst, e.Type)
	if flags&flagContentType != 0 {
		dst = appendString(dst, e.ContentType)
	}
	if flags&flagTags != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(e.Tags)))
		for _, t := range e.Tags {
			dst = appendString(dst, t)
		}
	}
	if flags&flagMetadata != 0 {
		keys := make([]string, 0, len(e.Metadata))
		for k := range e.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = binary.AppendUvarint(dst, uint64(len(keys)))
		for _, k := range keys {
			dst = appendString(dst, k)
			dst = appendString(dst, e.Metadata[k])
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Payload)))
	dst = append(dst, e.Payload...)
	return append(dst, 0, 0, 0, 0)
}

// EventSize is the exact size of the envelope AppendEvent makes of e.
func EventSize(e *journal.Event) int {
	n := eventHeader + stringSize(len(e.Type)) + stringSize(len(e.Payload)) + 4
	if e.ContentType != "" {
		n += stringSize(len(e.ContentType))
	}
	if len(e.Tags) > 0 {
		n += uvarintSize(uint64(len(e.Tags)))
		for _, t := range e.Tags {
			n += stringSize(len(t))
		}
	}
	if len(e.Metadata) > 0 {
		n += uvarintSize(uint64(len(e.Metadata)))
		for k, v := range e.Metadata {
			n += stringSize(len(k)) + stringSize(len(v))
		}
	}
	return n
}

func stringSize(n int) int { return uvarintSize(uint64(n)) + n }

func uvarintSize(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// SealEvent writes the position, the commit time and the checksum into an
// envelope made by AppendEvent.
func SealEvent(b []byte, pos uint64, unixNano int64) {
	binary.BigEndian.PutUint64(b[2:], pos)
	binary.BigEndian.PutUint64(b[10:], uint64(unixNano))
	n := len(b) - 4
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
}

// EventPosition returns the position recorded in an envelope, without a
// full decode (and without checking the checksum).
func EventPosition(b []byte) (uint64, error) {
	if len(b) < eventHeader+4 || b[0] != Version {
		return 0, fmt.Errorf("%w: event envelope of %d bytes", ErrValue, len(b))
	}
	return binary.BigEndian.Uint64(b[2:]), nil
}

// Decoder decodes envelopes. It interns the strings that repeat across
// events (types, content types, tags, metadata keys) so that a replay
// allocates little more than the payloads. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	strs map[string]string
}

// maxInterned bounds the interning table; past it strings are allocated.
const maxInterned = 4096

func (d *Decoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.strs == nil {
		d.strs = make(map[string]string)
	}
	if len(d.strs) < maxInterned {
		d.strs[s] = s
	}
	return s
}

// DecodeEvent decodes an envelope into e's Position, Time, Type,
// ContentType, Tags, Metadata and Payload; it leaves Stream and Sequence
// alone. e shares no memory with b.
func (d *Decoder) DecodeEvent(b []byte, e *journal.Event) error {
	if len(b) < eventHeader+4 {
		return fmt.Errorf("%w: event envelope of %d bytes", ErrValue, len(b))
	}
	if b[0] != Version {
		return fmt.Errorf("%w: event envelope version %d", ErrValue, b[0])
	}
	n := len(b) - 4
	if got, want := crc32.Checksum(b[:n], castagnoli), binary.BigEndian.Uint32(b[n:]); got != want {
		return fmt.Errorf("%w: event checksum %08x, want %08x", ErrValue, got, want)
	}
	flags := b[1]
	if flags&^(flagContentType|flagTags|flagMetadata) != 0 {
		return fmt.Errorf("%w: unknown event flags %02x", ErrValue, flags)
	}
	e.Position = binary.BigEndian.Uint64(b[2:])
	e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[10:])))
	r := reader{b: b[eventHeader:n]}
	e.Type = d.intern(r.bytes())
	e.ContentType = ""
	if flags&flagContentType != 0 {
		e.ContentType = d.intern(r.bytes())
	}
	e.Tags = nil
	if flags&flagTags != 0 {
		cnt := r.count()
		if cnt > 0 {
			e.Tags = make([]string, cnt)
			for i := range e.Tags {
				e.Tags[i] = d.intern(r.bytes())
			}
		}
	}
	e.Metadata = nil
	if flags&flagMetadata != 0 {
		cnt := r.count()
		if cnt > 0 {
			e.Metadata = make(map[string]string, cnt)
			for range cnt {
				k := d.intern(r.bytes())
				e.Metadata[k] = string(r.bytes())
			}
		}
	}
	p := r.bytes()
	e.Payload = nil
	if len(p) > 0 {
		e.Payload = append(make([]byte, 0, len(p)), p...)
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes in event envelope", ErrValue, len(r.b))
	}
	return nil
}

// ChunkWriter builds an index chunk: the positions of one commit that a
// global log, kind or tag index entry refers to, each with the stream and
// sequence of its event.
//
//	version | items | count u32 | crc32c
//	item: uvarint position delta (the first: the position itself)
//	      uvarint stream length (0: same stream as the previous item), stream
//	      uvarint sequence
type ChunkWriter struct {
	buf     []byte
	n       int
	lastPos uint64
	prev    string
}

// Reset empties w for reuse.
func (w *ChunkWriter) Reset() {
	w.buf, w.n, w.lastPos, w.prev = w.buf[:0], 0, 0, ""
}

// Len is the number of items added.
func (w *ChunkWriter) Len() int { return w.n }

// LastPos is the position of the last item added.
func (w *ChunkWriter) LastPos() uint64 { return w.lastPos }

// Add appends an item; positions must rise.
func (w *ChunkWriter) Add(pos uint64, stream string, seq uint64) {
	if w.n == 0 {
		w.buf = append(w.buf[:0], Version)
		w.buf = binary.AppendUvarint(w.buf, pos)
	} else {
		w.buf = binary.AppendUvarint(w.buf, pos-w.lastPos)
	}
	if w.n > 0 && stream == w.prev {
		w.buf = append(w.buf, 0)
	} else {
		w.buf = appendString(w.buf, stream)
		w.prev = stream
	}
	w.buf = binary.AppendUvarint(w.buf, seq)
	w.n++
	w.lastPos = pos
}

// Bytes finishes the chunk and returns it; the slice is valid until the next
// Reset or Add. Bytes must be called once per chunk.
func (w *ChunkWriter) Bytes() []byte {
	w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(w.n))
	w.buf = binary.BigEndian.AppendUint32(w.buf, crc32.Checksum(w.buf, castagnoli))
	return w.buf
}

// ChunkReader walks the items of a chunk. The stream slices it returns alias
// the chunk.
type ChunkReader struct {
	r      reader
	n, i   int
	pos    uint64
	stream []byte
}

// NewChunkReader checks a chunk's version, checksum and count.
func NewChunkReader(b []byte) (ChunkReader, error) {
	if len(b) < 1+8 {
		return ChunkReader{}, fmt.Errorf("%w: chunk of %d bytes", ErrValue, len(b))
	}
	if b[0] != Version {
		return ChunkReader{}, fmt.Errorf("%w: chunk version %d", ErrValue, b[0])
	}
	end := len(b) - 4
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.BigEndian.Uint32(b[end:]); got != want {
		return ChunkReader{}, fmt.Errorf("%w: chunk checksum %08x, want %08x", ErrValue, got, want)
	}
	n := binary.BigEndian.Uint32(b[end-4:])
	body := b[1 : end-4]
	// Each item takes at least 3 bytes.
	if n == 0 || uint64(n)*3 > uint64(len(body)) {
		return ChunkReader{}, fmt.Errorf("%w: chunk count %d for %d bytes", ErrValue, n, len(body))
	}
	return ChunkReader{r: reader{b: body}, n: int(n)}, nil
}

// Len is the number of items in the chunk.
func (c *ChunkReader) Len() int { return c.n }

// Next returns the next item; ok is false at the end or on error.
func (c *ChunkReader) Next() (pos uint64, stream []byte, seq uint64, ok bool, err error) {
	if c.i >= c.n {
		if len(c.r.b) != 0 {
			return 0, nil, 0, false, fmt.Errorf("%w: %d trailing bytes in chunk", ErrValue, len(c.r.b))
		}
		return 0, nil, 0, false, nil
	}
	d := c.r.uvarint()
	if c.i > 0 && d == 0 {
		return 0, nil, 0, false, fmt.Errorf("%w: chunk positions do not rise", ErrValue)
	}
	if c.pos+d < c.pos {
		return 0, nil, 0, false, fmt.Errorf("%w: chunk position overflows", ErrValue)
	}
	c.pos += d
	s := c.r.bytes()
	if len(s) > 0 {
		c.stream = s
	} else if c.i == 0 {
		return 0, nil, 0, false, fmt.Errorf("%w: chunk starts with an empty stream", ErrValue)
	}
	seq = c.r.uvarint()
	if c.r.err != nil {
		return 0, nil, 0, false, c.r.err
	}
	if c.pos == 0 || seq == 0 {
		return 0, nil, 0, false, fmt.Errorf("%w: zero position or sequence in chunk", ErrValue)
	}
	c.i++
	return c.pos, c.stream, seq, true, nil
}

// StreamMeta is what a stream's metadata record holds.
type StreamMeta struct {
	Tombstoned bool
	// Created is the commit time of the stream's first event (unix nanos);
	// zero for a stream tombstoned before any append.
	Created int64
	// LastSeq and LastTime are the last sequence and its time as of the
	// last deletion of covered events (or 0): the floor of the stream's
	// head, so that it survives the deletion of all its events.
	LastSeq  uint64
	LastTime int64
	// Deleted is the last sequence deleted because a snapshot covered it
	// (events are deleted oldest first, so 1..Deleted are gone).
	Deleted uint64
}

// AppendStreamMeta appends the encoding of m to dst.
func AppendStreamMeta(dst []byte, m StreamMeta) []byte {
	var flags byte
	if m.Tombstoned {
		flags = 1
	}
	start := len(dst)
	dst = append(dst, Version, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Created))
	dst = binary.BigEndian.AppendUint64(dst, m.LastSeq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.LastTime))
	dst = binary.BigEndian.AppendUint64(dst, m.Deleted)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeStreamMeta decodes a stream metadata record.
func DecodeStreamMeta(b []byte) (StreamMeta, error) {
	body, err := checked(b, 1+1+32+4, "stream metadata")
	if err != nil {
		return StreamMeta{}, err
	}
	if body[1] > 1 {
		return StreamMeta{}, fmt.Errorf("%w: stream metadata flags %02x", ErrValue, body[1])
	}
	return StreamMeta{
		Tombstoned: body[1] == 1,
		Created:    int64(binary.BigEndian.Uint64(body[2:])),
		LastSeq:    binary.BigEndian.Uint64(body[10:]),
		LastTime:   int64(binary.BigEndian.Uint64(body[18:])),
		Deleted:    binary.BigEndian.Uint64(body[26:]),
	}, nil
}

// AppendSnapshot appends the encoding of a snapshot to dst.
func AppendSnapshot(dst []byte, seq uint64, unixNano int64, data []byte) []byte {
	start := len(dst)
	dst = append(dst, Version)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(unixNano))
	dst = append(dst, data...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeSnapshot decodes a snapshot; data is a copy.
func DecodeSnapshot(b []byte) (seq uint64, unixNano int64, data []byte, err error) {
	body, err := checked(b, -1, "snapshot")
	if err != nil {
		return 0, 0, nil, err
	}
	if len(body) < 17 {
		return 0, 0, nil, fmt.Errorf("%w: snapshot of %d bytes", ErrValue, len(b))
	}
	seq = binary.BigEndian.Uint64(body[1:])
	unixNano = int64(binary.BigEndian.Uint64(body[9:]))
	if len(body) > 17 {
		data = append([]byte(nil), body[17:]...)
	}
	return seq, unixNano, data, nil
}

// Idem is an idempotency record: the result of the first append with a key.
type Idem struct {
	FirstSeq, LastSeq, FirstPos, LastPos uint64
	Reply                                []byte
}

// AppendIdem appends the encoding of r to dst.
func AppendIdem(dst []byte, r Idem) []byte {
	start := len(dst)
	dst = append(dst, Version)
	for _, v := range [...]uint64{r.FirstSeq, r.LastSeq, r.FirstPos, r.LastPos} {
		dst = binary.BigEndian.AppendUint64(dst, v)
	}
	dst = append(dst, r.Reply...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeIdem decodes an idempotency record; Reply is a copy.
func DecodeIdem(b []byte) (Idem, error) {
	body, err := checked(b, -1, "idempotency record")
	if err != nil {
		return Idem{}, err
	}
	if len(body) < 33 {
		return Idem{}, fmt.Errorf("%w: idempotency record of %d bytes", ErrValue, len(b))
	}
	r := Idem{
		FirstSeq: binary.BigEndian.Uint64(body[1:]),
		LastSeq:  binary.BigEndian.Uint64(body[9:]),
		FirstPos: binary.BigEndian.Uint64(body[17:]),
		LastPos:  binary.BigEndian.Uint64(body[25:]),
	}
	if len(body) > 33 {
		r.Reply = append([]byte(nil), body[33:]...)
	}
	return r, nil
}

// Stats are the store's counters, written with every commit.
type Stats struct {
	LastPos, Streams, Events uint64
}

// AppendStats appends the encoding of s to dst.
func AppendStats(dst []byte, s Stats) []byte {
	start := len(dst)
	dst = append(dst, Version)
	dst = binary.BigEndian.AppendUint64(dst, s.LastPos)
	dst = binary.BigEndian.AppendUint64(dst, s.Streams)
	dst = binary.BigEndian.AppendUint64(dst, s.Events)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeStats decodes the store's counters.
func DecodeStats(b []byte) (Stats, error) {
	body, err := checked(b, 1+24+4, "stats")
	if err != nil {
		return Stats{}, err
	}
	return Stats{
		LastPos: binary.BigEndian.Uint64(body[1:]),
		Streams: binary.BigEndian.Uint64(body[9:]),
		Events:  binary.BigEndian.Uint64(body[17:]),
	}, nil
}

// checked verifies the version byte, the size (when size >= 0) and the
// trailing checksum, and returns b without the checksum.
func checked(b []byte, size int, what string) ([]byte, error) {
	if len(b) < 5 || (size >= 0 && len(b) != size) {
		return nil, fmt.Errorf("%w: %s of %d bytes", ErrValue, what, len(b))
	}
	if b[0] != Version {
		return nil, fmt.Errorf("%w: %s version %d", ErrValue, what, b[0])
	}
	n := len(b) - 4
	if got, want := crc32.Checksum(b[:n], castagnoli), binary.BigEndian.Uint32(b[n:]); got != want {
		return nil, fmt.Errorf("%w: %s checksum %08x, want %08x", ErrValue, what, got, want)
	}
	return b[:n], nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader consumes length-prefixed fields; the first error sticks and later
// reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad varint", ErrValue)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: length %d over the %d bytes left", ErrValue, n, len(r.b))
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// count reads an element count, each element taking at least one byte.
func (r *reader) count() int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: count %d over the %d bytes left", ErrValue, n, len(r.b))
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}
