package fuel

import "errors"

var (
	errEOF      = errors.New("unexpected end")
	errLEB      = errors.New("integer too long")
	errTooLong  = errors.New("length past the end")
	errTrailing = errors.New("bytes after the last entry")
)

// reader decodes the binary format. The first error sticks: later reads
// return zero values, so callers check r.err once after a group of reads.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.fail(errEOF)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n uint32) []byte {
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail(errTooLong)
		return nil
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c&0x70 != 0 {
			r.fail(errLEB)
			return 0
		}
		v |= uint32(c&0x7F) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail(errLEB)
	return 0
}

// sleb skips a signed LEB128 of at most max bytes.
func (r *reader) sleb(max int) {
	for i := 0; i < max; i++ {
		c := r.byte()
		if r.err != nil || c&0x80 == 0 {
			return
		}
	}
	r.fail(errLEB)
}

// uleb64 skips an unsigned LEB128 of at most 10 bytes.
func (r *reader) uleb64() { r.sleb(10) }

func (r *reader) name() []byte { return r.bytes(r.u32()) }

// limits skips table or memory limits (shared and 64-bit flags included).
func (r *reader) limits() {
	flags := r.byte()
	if flags > 7 {
		r.fail(errors.New("bad limits flags"))
		return
	}
	r.uleb64()
	if flags&1 != 0 {
		r.uleb64()
	}
}

// blockType skips a block type: 0x40, a value type, or an s33 type index.
func (r *reader) blockType() {
	if r.off >= len(r.b) {
		r.fail(errEOF)
		return
	}
	switch r.b[r.off] {
	case 0x40, 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		r.off++
		return
	}
	r.sleb(5)
}

// memarg skips alignment and offset.
func (r *reader) memarg() {
	r.u32()
	r.uleb64()
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
