package badgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

var ev = journaltest.Ev

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no dir", cfg: Config{}, want: "Dir is required"},
		{name: "bad sync", cfg: Config{Dir: "x", Sync: 7}, want: "unknown Sync"},
		{name: "bad key", cfg: Config{Dir: "x", EncryptionKey: []byte("short")}, want: "EncryptionKey of 5 bytes"},
		{name: "append too big", cfg: Config{Dir: "x", MaxAppendBytes: 64 << 20}, want: "MaxAppendBytes"},
		{name: "event over append", cfg: Config{Dir: "x", MaxEventSize: 2 << 20, MaxAppendBytes: 1 << 20}, want: "MaxEventSize"},
		{name: "negative", cfg: Config{Dir: "x", MaxEventSize: -1}, want: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if err := (Config{Dir: "x", EncryptionKey: make([]byte, 32)}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults with a key: %v", err)
	}
	for _, p := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		if got, err := ParseSyncPolicy(p.String()); err != nil || got != p {
			t.Fatalf("ParseSyncPolicy(%q) = %v, %v", p, got, err)
		}
	}
}

func TestLimits(t *testing.T) {
	s := openT(t, Config{MaxEventSize: 1000, MaxAppendBytes: 2500, MaxAppendEvents: 3, MaxSnapshotSize: 10})
	ctx := context.Background()
	big := strings.Repeat("x", 900)
	_, err := s.Append(ctx, journal.AppendRequest{Stream: "a/1", Events: []journal.Event{ev("E", big), ev("E", big), ev("E", big)}})
	var tl *journal.TooLargeError
	if !errors.As(err, &tl) || tl.Index != -1 || tl.Limit != 2500 {
		t.Fatalf("append over MaxAppendBytes: %v", err)
	}
	_, err = s.Append(ctx, journal.AppendRequest{Stream: "a/1", Events: make([]journal.Event, 4)})
	if !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("append over MaxAppendEvents: %v", err)
	}
	journaltest.MustAppend(t, s, "a/1", 0, ev("E", big), ev("E", big))
	if err := s.SaveSnapshot(ctx, journal.Snapshot{Stream: "a/1", Sequence: 1, Data: make([]byte, 11)}); !errors.As(err, &tl) {
		t.Fatalf("snapshot over the limit: %v", err)
	}
}

// TestGroupCommit checks that concurrent appends share commits and syncs.
func TestGroupCommit(t *testing.T) {
	s := openT(t, Config{})
	const writers, each = 64, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Append(context.Background(), journal.AppendRequest{Stream: fmt.Sprintf("g/%d", w), Expected: uint64(i), Events: []journal.Event{ev("E", "x")}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cs := s.CommitStats()
	if cs.Events != writers*each || cs.Appends != writers*each {
		t.Fatalf("commit stats %+v", cs)
	}
	perSync := float64(cs.Events) / float64(cs.Syncs)
	t.Logf("%d events in %d commits, %d syncs: %.1f events per sync", cs.Events, cs.Groups, cs.Syncs, perSync)
	if cs.Syncs != cs.Groups || perSync < 4 {
		t.Fatalf("group commit does not coalesce: %+v", cs)
	}
}

// TestStreamCacheEviction runs the expected-sequence checks through heads
// loaded from Badger after eviction.
func TestStreamCacheEviction(t *testing.T) {
	s := openT(t, Config{StreamCacheSize: 3})
	ctx := context.Background()
	for round := range 4 {
		for i := range 10 {
			stream := fmt.Sprintf("c/%d", i)
			_, err := s.Append(ctx, journal.AppendRequest{Stream: stream, Expected: uint64(round + 1), Events: []journal.Event{ev("E", "")}})
			var ce *journal.ConflictError
			if round > 0 && (!errors.As(err, &ce) || ce.Actual != uint64(round)) {
				t.Fatalf("round %d %s: stale append: %v", round, stream, err)
			}
			journaltest.MustAppend(t, s, stream, uint64(round), ev("E", ""))
		}
		if i := len(s.c.heads); i > 3 {
			t.Fatalf("%d heads cached", i)
		}
	}
	journaltest.CheckGlobalLog(t, s)
}

func TestCloseWithPendingAppends(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []journal.AppendResult
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r, err := s.Append(context.Background(), journal.AppendRequest{Stream: fmt.Sprintf("p/%d", w), Expected: uint64(i), Events: []journal.Event{ev("E", "")}})
				if errors.Is(err, journal.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok = append(ok, r)
				mu.Unlock()
			}
		}()
	}
	if _, err := s.WaitPosition(context.Background(), 0, 200); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait() // every caller returned
	s = openT(t, Config{Dir: dir})
	all := journaltest.CheckGlobalLog(t, s)
	if len(all) != len(ok) {
		t.Fatalf("%d acknowledged appends, %d events stored", len(ok), len(all))
	}
}

func TestDeleteCoveredEvents(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, DeleteCoveredEvents: true, MaxAppendEvents: 10_000})
	ctx := context.Background()
	journaltest.MustAppend(t, s, "other/1", 0, ev("E", ""))
	// More events than one commit deletes.
	const n = maxDeletesPerCommit*2 + 500
	var last uint64
	for last < n {
		batch := make([]journal.Event, min(5000, n-int(last)))
		for i := range batch {
			batch[i] = ev("E", fmt.Sprint(last+uint64(i)+1))
		}
		last = journaltest.MustAppend(t, s, "big/1", last, batch...).LastSequence
	}
	journaltest.MustAppend(t, s, "other/1", 1, ev("E", ""))
	if err := s.SaveSnapshot(ctx, journal.Snapshot{Stream: "big/1", Sequence: n - 10, Data: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	// The deletion finishes in later commits.
	waitFor(t, func() bool { info, _ := s.Info(ctx, "big/1"); return info.Count == 10 })
	info, err := s.Info(ctx, "big/1")
	if err != nil || info.LastSequence != n || info.Count != 10 {
		t.Fatalf("info %+v %v", info, err)
	}
	evs := journaltest.Collect(t, s.Read(ctx, "big/1", 0, 0))
	if len(evs) != 10 || evs[0].Sequence != n-9 {
		t.Fatalf("read %d events", len(evs))
	}
	all := journaltest.Collect(t, s.ReadAll(ctx, 0, 0, journal.Filter{}, 0))
	if len(all) != 12 || all[0].Stream != "other/1" || all[1].Sequence != n-9 {
		t.Fatalf("global log yields %d events", len(all))
	}
	if st, _ := s.Stats(ctx); st.Events != 12 || len(st.Heads) != 1 || st.Heads[0] != n+2 {
		t.Fatalf("stats %+v", st)
	}
	// Delete everything: the head survives.
	if err := s.SaveSnapshot(ctx, journal.Snapshot{Stream: "big/1", Sequence: n}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, Config{Dir: dir, DeleteCoveredEvents: true})
	info, err = s.Info(ctx, "big/1")
	if err != nil || info.LastSequence != n || info.Count != 0 || info.Last.IsZero() {
		t.Fatalf("info after deleting all %+v %v", info, err)
	}
	if r := journaltest.MustAppend(t, s, "big/1", n, ev("E", "")); r.FirstSequence != n+1 {
		t.Fatalf("append after deleting all: %+v", r)
	}
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 5 s")
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	journaltest.MustAppend(t, s, "a/1", 0, ev("E", "1"), ev("E", "2"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro := openT(t, Config{Dir: dir, ReadOnly: true})
	ctx := context.Background()
	if ro.LastPosition(0) != 2 || len(journaltest.Collect(t, ro.Read(ctx, "a/1", 0, 0))) != 2 {
		t.Fatal("read-only store does not read")
	}
	if _, err := ro.Append(ctx, journal.AppendRequest{Stream: "a/1", Expected: 2, Events: []journal.Event{ev("E", "")}}); !errors.Is(err, journal.ErrReadOnly) {
		t.Fatalf("append to read-only store: %v", err)
	}
	for _, err := range []error{ro.Tombstone(ctx, "a/1"), ro.SaveSnapshot(ctx, journal.Snapshot{Stream: "a/1", Sequence: 1})} {
		if !errors.Is(err, journal.ErrReadOnly) {
			t.Fatalf("write to read-only store: %v", err)
		}
	}
}

func TestEncryption(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	secret := "the-secret-payload-" + strings.Repeat("z", 64)
	s, err := Open(Config{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	journaltest.MustAppend(t, s, "vault/1", 0, ev("Stored", secret))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if bytes.Contains(b, []byte(secret)) {
			return fmt.Errorf("%s holds the plaintext", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Dir: dir}); err == nil {
		t.Fatal("opened an encrypted store without its key")
	}
	if _, err := Open(Config{Dir: dir, EncryptionKey: bytes.Repeat([]byte{8}, 32)}); err == nil {
		t.Fatal("opened an encrypted store with the wrong key")
	}
	s = openT(t, Config{Dir: dir, EncryptionKey: key})
	evs := journaltest.Collect(t, s.Read(context.Background(), "vault/1", 0, 0))
	if len(evs) != 1 || string(evs[0].Payload) != secret {
		t.Fatalf("read back %+v", evs)
	}
}

func TestBadgerLogsGoToSlog(t *testing.T) {
	var buf syncBuffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := openT(t, Config{Logger: l})
	s.Close()
	if out := buf.String(); !strings.Contains(out, "component=badger") {
		t.Fatalf("no Badger log line with component=badger in:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rawUpdate changes the stored bytes under the store's feet.
func rawUpdate(t *testing.T, dir string, fn func(txn *badger.Txn) error) {
	t.Helper()
	db, err := badger.Open(badgerOptions(Config{Dir: dir}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptBytes(t *testing.T) {
	ctx := context.Background()
	flip := func(key []byte) func(txn *badger.Txn) error {
		return func(txn *badger.Txn) error {
			item, err := txn.Get(key)
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			v[len(v)-6] ^= 0x55 // inside the payload or the chunk
			return txn.Set(key, v)
		}
	}
	tests := []struct {
		name    string
		corrupt func(txn *badger.Txn) error
		read    func(s *Store) error
		want    journal.CorruptError
	}{
		{
			name:    "event payload, read by stream",
			corrupt: flip(codec.EventKey(nil, "acc/1", 2)),
			read:    func(s *Store) error { return firstErr(s.Read(ctx, "acc/1", 0, 0)) },
			want:    journal.CorruptError{Stream: "acc/1", Sequence: 2, Position: 3},
		},
		{
			name:    "event payload, read by position",
			corrupt: flip(codec.EventKey(nil, "acc/1", 2)),
			read:    func(s *Store) error { return firstErr(s.ReadAll(ctx, 0, 0, journal.Filter{}, 0)) },
			want:    journal.CorruptError{Stream: "acc/1", Sequence: 2, Position: 3},
		},
		{
			name:    "truncated event",
			corrupt: func(txn *badger.Txn) error { return txn.Set(codec.EventKey(nil, "acc/1", 1), []byte{1, 0, 0}) },
			read:    func(s *Store) error { return firstErr(s.Read(ctx, "acc/1", 0, 0)) },
			want:    journal.CorruptError{Stream: "acc/1", Sequence: 1},
		},
		{
			name:    "global log chunk",
			corrupt: flip(codec.LogKey(nil, 3)),
			read:    func(s *Store) error { return firstErr(s.ReadAll(ctx, 0, 0, journal.Filter{}, 0)) },
			want:    journal.CorruptError{Stream: "(global log)", Position: 3},
		},
		{
			name:    "missing event",
			corrupt: func(txn *badger.Txn) error { return txn.Delete(codec.EventKey(nil, "acc/1", 2)) },
			read:    func(s *Store) error { return firstErr(s.ReadAll(ctx, 0, 0, journal.Filter{Kind: "acc"}, 0)) },
			want:    journal.CorruptError{Stream: "acc/1", Sequence: 2, Position: 3},
		},
		{
			name:    "snapshot",
			corrupt: flip(codec.SnapshotKey(nil, "acc/1")),
			read:    func(s *Store) error { _, err := s.LoadSnapshot(ctx, "acc/1"); return err },
			want:    journal.CorruptError{Stream: "acc/1"},
		},
		{
			name:    "stream metadata",
			corrupt: flip(codec.StreamKey(nil, "acc/1")),
			read:    func(s *Store) error { _, err := s.Info(ctx, "acc/1"); return err },
			want:    journal.CorruptError{Stream: "acc/1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			journaltest.MustAppend(t, s, "acc/1", 0, ev("Opened", "first payload"))
			journaltest.MustAppend(t, s, "acc/2", 0, ev("Opened", "other"))
			journaltest.MustAppend(t, s, "acc/1", 1, ev("Deposited", "second payload"))
			if err := s.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/1", Sequence: 1, Data: []byte("snapshot data")}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			rawUpdate(t, dir, tt.corrupt)
			s = openT(t, Config{Dir: dir})
			err = tt.read(s)
			var ce *journal.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *CorruptError", err)
			}
			got := *ce
			got.Err = nil
			if got != tt.want {
				t.Fatalf("corrupt error %+v, want %+v", got, tt.want)
			}
			if tt.want.Stream != "" && !strings.Contains(err.Error(), tt.want.Stream) {
				t.Fatalf("message %q does not name the stream", err)
			}
			// Appending to the corrupt stream fails cleanly or works; it
			// never panics.
			s.Append(ctx, journal.AppendRequest{Stream: "acc/1", Expected: journal.ExpectAny, Events: []journal.Event{ev("E", "")}})
		})
	}
}

func firstErr[T any](seq func(func(T, error) bool)) error {
	for _, err := range seq {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestOneGroupSeesItself queues several appends at once, so that the
// committer takes them in one group, and checks that they see each other:
// sequences, conflicts and idempotency keys within the group.
func TestOneGroupSeesItself(t *testing.T) {
	s := openT(t, Config{})
	reqs := []journal.AppendRequest{
		{Stream: "a/1", Expected: 0, Events: []journal.Event{ev("E", "1")}},
		{Stream: "a/1", Expected: 1, Events: []journal.Event{ev("E", "2"), ev("E", "3")}},
		{Stream: "a/1", Expected: 1, Events: []journal.Event{ev("E", "stale")}},
		{Stream: "b/1", Expected: journal.ExpectAny, Events: []journal.Event{ev("E", "once")}, IdempotencyKey: "k", Reply: []byte("r")},
		{Stream: "b/1", Expected: journal.ExpectAny, Events: []journal.Event{ev("E", "twice")}, IdempotencyKey: "k"},
		{Stream: "a/1", Expected: 3, Events: []journal.Event{ev("E", "4")}},
	}
	ops := make([]*op, len(reqs))
	for i := range reqs {
		o, err := s.newAppendOp(&reqs[i])
		if err != nil {
			t.Fatal(err)
		}
		ops[i] = o
	}
	before := s.CommitStats().Groups
	s.mu.Lock()
	s.queue = append(s.queue, ops...)
	s.mu.Unlock()
	s.wake <- struct{}{}
	for _, o := range ops {
		<-o.done
	}
	if groups := s.CommitStats().Groups - before; groups != 1 {
		t.Fatalf("%d groups, want 1", groups)
	}
	want := []journal.AppendResult{
		{FirstSequence: 1, LastSequence: 1, FirstPosition: 1, LastPosition: 1},
		{FirstSequence: 2, LastSequence: 3, FirstPosition: 2, LastPosition: 3},
		{},
		{FirstSequence: 1, LastSequence: 1, FirstPosition: 4, LastPosition: 4, Reply: []byte("r")},
		{FirstSequence: 1, LastSequence: 1, FirstPosition: 4, LastPosition: 4, Duplicate: true, Reply: []byte("r")},
		{FirstSequence: 4, LastSequence: 4, FirstPosition: 5, LastPosition: 5},
	}
	for i, o := range ops {
		if i == 2 {
			var ce *journal.ConflictError
			if !errors.As(o.err, &ce) || ce.Actual != 3 {
				t.Fatalf("op 2: err = %v, want a conflict with actual 3", o.err)
			}
			continue
		}
		if o.err != nil || fmt.Sprint(o.res) != fmt.Sprint(want[i]) {
			t.Fatalf("op %d: %+v %v, want %+v", i, o.res, o.err, want[i])
		}
	}
	all := journaltest.CheckGlobalLog(t, s)
	if len(all) != 5 {
		t.Fatalf("%d events stored", len(all))
	}
}

// TestAbandonedAppend checks that an append whose caller gave up before the
// committer took it is not written.
func TestAbandonedAppend(t *testing.T) {
	s := openT(t, Config{})
	gone, err := s.newAppendOp(&journal.AppendRequest{Stream: "a/1", Events: []journal.Event{ev("E", "gone")}})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.newAppendOp(&journal.AppendRequest{Stream: "a/1", Events: []journal.Event{ev("E", "kept")}})
	if err != nil {
		t.Fatal(err)
	}
	gone.state.Store(stateAbandoned)
	s.mu.Lock()
	s.queue = append(s.queue, gone, kept)
	s.mu.Unlock()
	s.wake <- struct{}{}
	<-kept.done
	if kept.err != nil || kept.res.FirstPosition != 1 || kept.res.FirstSequence != 1 {
		t.Fatalf("kept: %+v %v", kept.res, kept.err)
	}
	evs := journaltest.Collect(t, s.Read(context.Background(), "a/1", 0, 0))
	if len(evs) != 1 || string(evs[0].Payload) != "kept" {
		t.Fatalf("stored %+v", evs)
	}
}

func TestSyncInterval(t *testing.T) {
	s := openT(t, Config{Sync: SyncInterval, SyncInterval: 5 * time.Millisecond})
	journaltest.MustAppend(t, s, "a/1", 0, ev("E", ""))
	if cs := s.CommitStats(); cs.Groups != 1 {
		t.Fatalf("commit stats %+v", cs)
	}
	// The append was acknowledged without a sync; the ticker syncs it.
	waitFor(t, func() bool { return s.CommitStats().Syncs >= 1 })
}

func TestIdempotencyTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a record to expire")
	}
	s := openT(t, Config{IdempotencyTTL: time.Second})
	req := journal.AppendRequest{Stream: "a/1", Expected: journal.ExpectAny, Events: []journal.Event{ev("E", "")}, IdempotencyKey: "k"}
	ctx := context.Background()
	if r, err := s.Append(ctx, req); err != nil || r.Duplicate {
		t.Fatalf("first: %+v %v", r, err)
	}
	if r, err := s.Append(ctx, req); err != nil || !r.Duplicate {
		t.Fatalf("repeat within the TTL: %+v %v", r, err)
	}
	// Once the record expires, the same key appends again. (Badger keeps
	// expiry in whole seconds.)
	waitFor(t, func() bool {
		r, err := s.Append(ctx, req)
		return err == nil && !r.Duplicate
	})
}

// TestSyncFailure checks that a failed sync fails every append of its
// group, publishes none of them, releases every caller, and makes the store
// refuse further writes.
func TestSyncFailure(t *testing.T) {
	s := openT(t, Config{})
	journaltest.MustAppend(t, s, "f/0", 0, ev("E", "durable"))
	errDisk := errors.New("disk on fire")
	var syncs atomic.Int32
	s.testSync = func() error {
		syncs.Add(1)
		return errDisk
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(context.Background(), journal.AppendRequest{Stream: fmt.Sprintf("f/%d", w+1), Events: []journal.Event{ev("E", "lost")}})
			if !errors.Is(err, errDisk) {
				t.Errorf("writer %d: %v, want the sync error", w, err)
			}
		}()
	}
	wg.Wait()
	if n := syncs.Load(); n != 1 {
		t.Fatalf("%d syncs after the failure, want 1", n)
	}
	if p := s.LastPosition(0); p != 1 {
		t.Fatalf("last position %d published, want 1", p)
	}
	if _, err := s.Append(context.Background(), journal.AppendRequest{Stream: "f/0", Expected: 1, Events: []journal.Event{ev("E", "")}}); !errors.Is(err, errDisk) {
		t.Fatalf("append after the failure: %v", err)
	}
	if err := s.SaveSnapshot(context.Background(), journal.Snapshot{Stream: "f/0", Sequence: 1}); !errors.Is(err, errDisk) {
		t.Fatalf("snapshot after the failure: %v", err)
	}
}

// TestAppendRoundTrip appends events of many sizes (around and beyond the
// envelope pools' size classes) from many goroutines and checks every event
// read back byte for byte, and that Append returns only once its position
// is published.
func TestAppendRoundTrip(t *testing.T) {
	s := openT(t, Config{})
	sizes := []int{0, 1, 180, 230, 231, 240, 256, 700, 1000, 1024, 3000, 4096, 5000, 70_000}
	const writers, each = 16, 40
	want := make([][]journal.Event, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("rt/%d", w)
			for i := range each {
				size := sizes[(w+i)%len(sizes)]
				e := journal.Event{
					Type:     fmt.Sprintf("T%d", i%3),
					Payload:  bytes.Repeat([]byte{byte(w), byte(i)}, size/2+size%2)[:size],
					Tags:     []string{fmt.Sprintf("w%d", w)},
					Metadata: map[string]string{"i": fmt.Sprint(i)},
				}
				if i%4 == 0 {
					e.ContentType = "application/x-test"
				}
				res, err := s.Append(context.Background(), journal.AppendRequest{Stream: stream, Expected: uint64(i), Events: []journal.Event{e}})
				if err != nil {
					t.Error(err)
					return
				}
				if p := s.LastPosition(0); p < res.LastPosition {
					t.Errorf("append at position %d returned with position %d published", res.LastPosition, p)
				}
				want[w] = append(want[w], e)
			}
		}()
	}
	wg.Wait()
	for w := range writers {
		got := journaltest.Collect(t, s.Read(context.Background(), fmt.Sprintf("rt/%d", w), 0, 0))
		if len(got) != len(want[w]) {
			t.Fatalf("writer %d: %d events read, %d appended", w, len(got), len(want[w]))
		}
		for i, e := range got {
			x := want[w][i]
			if e.Type != x.Type || e.ContentType != x.ContentType || !bytes.Equal(e.Payload, x.Payload) ||
				len(e.Tags) != 1 || e.Tags[0] != x.Tags[0] || e.Metadata["i"] != x.Metadata["i"] {
				t.Fatalf("writer %d event %d: read %+v, appended %+v", w, i, e, x)
			}
		}
	}
	journaltest.CheckGlobalLog(t, s)
}
