package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Key prefixes. The numbers are part of the on-disk format.
const (
	PrefixMeta     byte = 0x00
	PrefixLog      byte = 0x01
	PrefixEvent    byte = 0x02
	PrefixKind     byte = 0x03
	PrefixStream   byte = 0x04
	PrefixTag      byte = 0x05
	PrefixSnapshot byte = 0x06
	PrefixIdem     byte = 0x07
)

// ErrKey is wrapped by errors about malformed keys.
var ErrKey = errors.New("codec: malformed key")

// StatsKey is the key of the store's counters.
var StatsKey = []byte{PrefixMeta, 's', 't', 'a', 't', 's'}

// FormatKey is the key of the on-disk format version.
var FormatKey = []byte{PrefixMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// EventPrefix appends the prefix of every event key of stream to dst.
func EventPrefix(dst []byte, stream string) []byte {
	dst = append(dst, PrefixEvent)
	dst = append(dst, stream...)
	return append(dst, 0)
}

// EventKey appends the key of event seq of stream to dst.
func EventKey(dst []byte, stream string, seq uint64) []byte {
	dst = EventPrefix(dst, stream)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// ParseEventKey splits an event key.
func ParseEventKey(k []byte) (stream string, seq uint64, err error) {
	s, seq, err := parseNamed(k, PrefixEvent)
	return string(s), seq, err
}

// EventKeySeq returns the sequence of an event key without allocating.
func EventKeySeq(k []byte) (uint64, error) {
	_, seq, err := parseNamed(k, PrefixEvent)
	return seq, err
}

// LogKey appends the key of the global log chunk ending at lastPos to dst.
func LogKey(dst []byte, lastPos uint64) []byte {
	dst = append(dst, PrefixLog)
	return binary.BigEndian.AppendUint64(dst, lastPos)
}

// ParseLogKey returns the last position of a log chunk key.
func ParseLogKey(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != PrefixLog {
		return 0, fmt.Errorf("%w: log key %x", ErrKey, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// IndexPrefix appends the prefix of the chunks of a kind (PrefixKind) or tag
// (PrefixTag) index to dst.
func IndexPrefix(dst []byte, prefix byte, name string) []byte {
	dst = append(dst, prefix)
	dst = append(dst, name...)
	return append(dst, 0)
}

// IndexKey appends the key of the index chunk of name ending at lastPos.
func IndexKey(dst []byte, prefix byte, name string, lastPos uint64) []byte {
	dst = IndexPrefix(dst, prefix, name)
	return binary.BigEndian.AppendUint64(dst, lastPos)
}

// ParseIndexKey splits a kind or tag index key.
func ParseIndexKey(k []byte, prefix byte) (name string, lastPos uint64, err error) {
	s, pos, err := parseNamed(k, prefix)
	return string(s), pos, err
}

// parseNamed splits prefix name 0x00 number.
func parseNamed(k []byte, prefix byte) ([]byte, uint64, error) {
	if len(k) < 1+1+1+8 || k[0] != prefix || k[len(k)-9] != 0 {
		return nil, 0, fmt.Errorf("%w: %x", ErrKey, k)
	}
	name := k[1 : len(k)-9]
	if bytes.IndexByte(name, 0) >= 0 {
		return nil, 0, fmt.Errorf("%w: NUL inside name: %x", ErrKey, k)
	}
	return name, binary.BigEndian.Uint64(k[len(k)-8:]), nil
}

// StreamKey appends the key of a stream's metadata to dst.
func StreamKey(dst []byte, stream string) []byte {
	dst = append(dst, PrefixStream)
	return append(dst, stream...)
}

// StreamsPrefix appends the prefix of the metadata keys of the streams of
// kind ("" for all streams) to dst.
func StreamsPrefix(dst []byte, kind string) []byte {
	dst = append(dst, PrefixStream)
	if kind == "" {
		return dst
	}
	dst = append(dst, kind...)
	return append(dst, '/')
}

// ParseStreamKey returns the stream of a stream metadata key.
func ParseStreamKey(k []byte) (string, error) {
	if len(k) < 2 || k[0] != PrefixStream || bytes.IndexByte(k[1:], 0) >= 0 {
		return "", fmt.Errorf("%w: stream key %x", ErrKey, k)
	}
	return string(k[1:]), nil
}

// SnapshotKey appends the key of a stream's snapshot to dst.
func SnapshotKey(dst []byte, stream string) []byte {
	dst = append(dst, PrefixSnapshot)
	return append(dst, stream...)
}

// IdemKey appends the key of an idempotency record to dst.
func IdemKey(dst []byte, stream, key string) []byte {
	dst = append(dst, PrefixIdem)
	dst = append(dst, stream...)
	dst = append(dst, 0)
	return append(dst, key...)
}
