// Package codec holds the on-disk encoding of the Badger event store: the
// keys, which must sort in the order the store reads them, and the values,
// which are versioned, length-checked and guarded by a CRC-32C.
//
// Keys (numbers big-endian so that byte order is numeric order; stream ids,
// kinds and tags never hold a NUL byte, so a NUL ends them unambiguously):
//
//	0x00 "stats"                    store counters (last position, streams, events)
//	0x00 "format"                   on-disk format version
//	0x01 lastPos                    global log chunk: the refs of one commit's positions
//	0x02 stream 0x00 seq            an event (the envelope)
//	0x03 kind 0x00 lastPos          kind index chunk
//	0x04 stream                     stream metadata
//	0x05 tag 0x00 lastPos           tag index chunk
//	0x06 stream                     latest snapshot
//	0x07 stream 0x00 key            idempotency record
//
// Index chunks are keyed by the last position they hold, so a forward seek to
// a position lands on the chunk that holds it (or the next one).
//
// Every decoder here takes untrusted bytes: it returns an error, never
// panics, and never reads past its input; the fuzz tests hold it to that.
//
// Example:
//
//	k := codec.EventKey(nil, "account/42", 7)
//	stream, seq, err := codec.ParseEventKey(k) // "account/42", 7, nil
package codec
