// Package badgerstore is the journal.Store of a Troupe node, on Badger v4.
//
// # Writes: one committer, group commit
//
// Append validates and encodes its events in the caller's goroutine and
// queues them. One committer goroutine takes everything queued, checks each
// append's expected sequence against the stream heads it owns (appends to the
// same stream in one group see each other), assigns stream sequences and
// global positions, and writes the whole group as ONE Badger transaction: the
// events, one global-log chunk for the group's positions, one chunk per kind
// and per tag, stream metadata, idempotency records and the store counters.
// Under SyncAlways it then calls db.Sync once and only then acknowledges every
// append of the group. Badger is opened with SyncWrites off, so this sync is
// the only one on the write path and it covers every caller of the group.
// The committer stages, commits and syncs a group strictly one step after
// another, and starts the next group only then: see "Why the committer does
// not overlap" below.
//
// One group is one Badger transaction (not a WriteBatch, which splits into
// several transactions): Badger replays its write-ahead log transaction by
// transaction, so after a crash a group is wholly present or wholly absent,
// and since groups are written one after another, what survives is a prefix
// of the global log: no gaps, no partial appends. Writing one request per
// sync also matters for durability: db.Sync syncs only the active memtable's
// log, and a single request cannot straddle a memtable rotation.
//
// Readers see only acknowledged positions (Store.LastPosition); an event that
// is committed but not yet synced is invisible, so a projection never
// consumes an event that a crash could take back.
//
// # Goroutines and locks
//
// Open starts the committer (not in ReadOnly mode). The committer starts and
// owns the releaser goroutine: once a group is acknowledged (committed, and
// under SyncAlways synced), the committer hands it over, and the releaser
// publishes the new last position and wakes the group's callers, in commit
// order, while the committer goes on with the next group (waking a few
// hundred goroutines is work the Go runtime does one by one). The committer
// stops the releaser and waits for it before it returns. Close stops
// intake, lets the committer commit and acknowledge everything queued, waits
// for it to return and for running read iterators to finish, syncs and
// closes Badger. An append still queued when Close begins is committed; one
// that arrives later gets journal.ErrClosed; no caller is left waiting. Do
// not call Close from inside an iteration over the same store: Close waits
// for it.
//
// Store.mu guards the intake queue; Store.rmu counts running iterators. They
// are never held together, and never across a Badger call. Everything else
// the committer uses (stream heads, counters) is its own; the releaser
// touches only the groups it is handed and the Store's atomics.
//
// The ops that carry appends to the committer, and the encoded events, are
// pooled, so that an append allocates little and the garbage collector
// rarely runs during a group commit; the op type documents the hand-over
// rules that make the reuse safe.
//
// After a failed Badger commit or sync the store refuses further writes (the
// state on disk is unknown); reopen it.
//
// # Why the committer does not overlap
//
// Staging the next group while the previous one syncs (or letting a second
// goroutine sync while the committer stages) would keep one write per sync
// and looks free, but measured slower on the 2-core VMs we run on. Badger's
// log is a memory-mapped file, so db.Sync is an msync that write-protects
// every dirty page; while another thread of the process runs on the other
// core, each page costs a TLB-shootdown interrupt. One spinning goroutine
// doubles db.Sync (BenchmarkRawBadgerSyncBusy); docs/benchmarks.md has the
// figures.
//
// # Read-only opens
//
// Config.ReadOnly opens a store that no process has open for writing (Badger
// holds a directory lock). Badger cannot open read-only a directory whose
// owner was killed: its write-ahead log must first be replayed and
// truncated. Such an open fails with ErrNeedsRecovery, unless
// Config.RecoverReadOnly is set, which does one read-write open and close
// first (what the node's next start would do anyway).
//
// # Layout
//
// See internal/codec for the keys and the value encodings (versioned,
// checksummed, fuzzed). A stream's events are stored under
// stream-then-sequence keys, so replaying a stream is one Badger prefix scan;
// the global log and the kind and tag indexes hold (position, stream,
// sequence) references, one Badger entry per commit, so ReadAll resolves
// each reference through one Badger iterator (a step when an event follows
// the previous one in its stream, a seek otherwise). Benchmarks and their
// figures: docs/benchmarks.md.
//
// # Crash test
//
// TestCrash re-executes the test binary as a child that appends from many
// goroutines with SyncAlways and prints every acknowledged append; the parent
// SIGKILLs it at random moments, reopens the store and checks that every
// acknowledged event is there, in order, with a gap-free global log and no
// partial append. It runs 3 cycles by default; TROUPE_LONG=1 runs 25, and
// TROUPE_CRASH_CYCLES=N runs N. SIGKILL does not lose the OS page cache, so
// this proves write ordering, atomicity and acknowledge-after-commit, not the
// fsync itself (that needs power-loss testing; see docs/benchmarks.md).
//
// # Example
//
//	s, err := badgerstore.Open(badgerstore.Config{Dir: "data/journal"})
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//	res, err := s.Append(ctx, journal.AppendRequest{
//		Stream:   journal.StreamID("account", "42"),
//		Expected: 0,
//		Events:   []journal.Event{{Type: "Opened", Payload: []byte(`{"owner":"ada"}`)}},
//	})
//	for ev, err := range s.Read(ctx, "account/42", 1, 0) { ... }
package badgerstore
