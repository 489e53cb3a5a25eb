package jsstore

import (
	"time"

	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

// ReadCounts is how many direct batches and single leader reads s has
// asked for since it opened.
func ReadCounts(s *Store) (direct, leader uint64) {
	return s.directGets.Load(), s.leaderGets.Load()
}

// SetLeaderReads makes Read and ReadAll read one message per request from
// the stream's leader (on), as before batched reads, or in batches (off).
func SetLeaderReads(s *Store, on bool) { s.leaderReads.Store(on) }

// SetDirectHook makes hook see (and may shorten) every direct batch
// before the store does, as a lagging replica's answer would be. Set it
// before reading; nil removes it.
func SetDirectHook(s *Store, hook func(stream string, from uint64, b *jsread.Batch)) {
	s.directHook = hook
}

// DropTails empties every partition's tail cache, so that the next
// ReadAll reads the stream.
func DropTails(s *Store) {
	for _, p := range s.parts {
		p.tail.mu.Lock()
		p.tail.evs, p.tail.lo, p.tail.hi, p.tail.upto = nil, 0, 0, 0
		p.tail.mu.Unlock()
	}
}

// TailEnd is the position of the last event in partition n's tail cache
// (0: empty).
func TailEnd(s *Store, n int) uint64 {
	t := &s.parts[n].tail
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.evs) == 0 {
		return 0
	}
	return t.hi
}

// SetPublishHook makes hook see (and may change) what each batch's
// publish, and the resolving of an unknown outcome, answered (op
// "publish" or "resolve"); nil removes it. Set it while no append runs.
func SetPublishHook(s *Store, hook func(op string, ack jsbatch.Ack, err error) (jsbatch.Ack, error)) {
	s.publishHook = hook
}

// IdemSubject is the subject of stream's idempotency record for key.
func IdemSubject(s *Store, stream, key string) string {
	return s.idemSubject(s.part(stream).n, stream, key)
}

// Batches is how many batches s has published, over all partitions.
func Batches(s *Store) uint64 {
	var n uint64
	for _, p := range s.parts {
		p.mu.Lock()
		n += p.batches
		p.mu.Unlock()
	}
	return n
}

// StreamName is the name of partition n's stream.
func StreamName(s *Store, n int) string { return s.parts[n].name }

// GatherFor is how a committer gathers its next batch.
var GatherFor = gatherFor

// SetGather sets the most a busy partition's committer waits to gather
// its next batch (0: never).
func SetGather(s *Store, d time.Duration) { s.gather.Store(int64(d)) }
