package journaltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

// Suite describes a store under test.
type Suite struct {
	// Open returns a new, empty store. The suite closes it (Close is
	// idempotent, so Open may also register its own cleanup).
	Open func(t *testing.T) journal.Store
	// Reopen closes s and opens the same data again, as after a restart.
	// Nil skips the restart tests.
	Reopen func(t *testing.T, s journal.Store) journal.Store
	// MaxEventSize is the store's event size limit. Default 1 MiB.
	MaxEventSize int
	// Gaps says that positions in a partition increase strictly but may
	// skip numbers (a store that keeps other records in the same sequence,
	// as the JetStream store does). Without it positions must run 1, 2, 3
	// without a gap. Either way one append's events have consecutive
	// positions.
	Gaps bool
}

// Run runs the conformance suite: every journal.Store must pass it.
func Run(t *testing.T, s Suite) {
	if s.MaxEventSize == 0 {
		s.MaxEventSize = 1 << 20
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s Suite)
	}{
		{"AppendAndRead", testAppendAndRead},
		{"Conflicts", testConflicts},
		{"AtomicMultiEventAppend", testAtomic},
		{"InvalidInput", testInvalid},
		{"ConcurrentAppends", testConcurrent},
		{"ReadAllFilters", testReadAll},
		{"ReadFromAndLimit", testReadLimits},
		{"WaitPosition", testWaitPosition},
		{"InfoAndStreams", testInfo},
		{"Snapshots", testSnapshots},
		{"Tombstone", testTombstone},
		{"Idempotency", testIdempotency},
		{"Close", testClose},
		{"CanceledContext", testCanceled},
		{"Restart", testRestart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, s) })
	}
}

func open(t *testing.T, s Suite) journal.Store {
	t.Helper()
	st := s.Open(t)
	t.Cleanup(func() { st.Close() })
	gaps[st] = s.Gaps
	return st
}

// gaps remembers which stores may skip positions (Suite.Gaps), so that
// the helpers below check what each store promises.
var gaps = map[journal.Store]bool{}

// Ev returns an event with a type and a payload.
func Ev(typ, payload string) journal.Event {
	return journal.Event{Type: typ, Payload: []byte(payload)}
}

// MustAppend appends or fails the test.
func MustAppend(t testing.TB, st journal.Store, stream string, expected uint64, evs ...journal.Event) journal.AppendResult {
	t.Helper()
	res, err := st.Append(context.Background(), journal.AppendRequest{Stream: stream, Expected: expected, Events: evs})
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

// Collect drains an iterator, failing the test on an error.
func Collect[T any](t testing.TB, seq func(func(T, error) bool)) []T {
	t.Helper()
	var out []T
	for v, err := range seq {
		if err != nil {
			t.Fatalf("iteration: %v", err)
		}
		out = append(out, v)
	}
	return out
}

// CheckGlobalLog reads every partition of the log and checks that each
// partition's positions run 1..LastPosition without gap or duplicate (or,
// for a store that may skip positions, increase strictly up to
// LastPosition), that every event is in its stream's partition, and that
// each stream's events come in sequence order. It returns the events,
// partition by partition.
func CheckGlobalLog(t testing.TB, st journal.Store) []journal.Event {
	t.Helper()
	return CheckGlobalLogGaps(t, st, gaps[st])
}

// CheckGlobalLogGaps is CheckGlobalLog for a store opened outside the
// suite: mayGap says that its positions may skip numbers (Suite.Gaps).
func CheckGlobalLogGaps(t testing.TB, st journal.Store, mayGap bool) []journal.Event {
	t.Helper()
	var all []journal.Event
	seqs := map[string]uint64{}
	for p := range st.Partitions() {
		evs := Collect(t, st.ReadAll(context.Background(), p, 0, journal.Filter{}, 0))
		for i, e := range evs {
			badPos := e.Position != uint64(i+1)
			if mayGap {
				badPos = e.Position == 0 || (i > 0 && e.Position <= evs[i-1].Position)
			}
			if badPos || e.Partition != p {
				t.Fatalf("partition %d: event %d has partition %d position %d", p, i, e.Partition, e.Position)
			}
			if want := st.PartitionOf(e.Stream); want != p {
				t.Fatalf("partition %d holds an event of %s, whose partition is %d", p, e.Stream, want)
			}
			if e.Sequence != seqs[e.Stream]+1 && seqs[e.Stream] != 0 {
				t.Fatalf("partition %d: stream %s jumps from %d to %d", p, e.Stream, seqs[e.Stream], e.Sequence)
			}
			seqs[e.Stream] = e.Sequence
		}
		var last uint64
		if len(evs) > 0 {
			last = evs[len(evs)-1].Position
		}
		if got := st.LastPosition(p); got != last {
			t.Fatalf("LastPosition(%d) %d, the partition's last event is at %d (%d events)", p, got, last, len(evs))
		}
		all = append(all, evs...)
	}
	return all
}

// total is the number of events in every partition of the log.
func total(st journal.Store) uint64 {
	var n uint64
	for p := range st.Partitions() {
		for _, err := range st.ReadAll(context.Background(), p, 0, journal.Filter{}, 0) {
			if err == nil {
				n++
			}
		}
	}
	return n
}

// positions checks the positions appends get: consecutive within an
// append, after the partition's previous append, and (for a gap-free
// store) exactly the next ones.
type positions struct {
	st   journal.Store
	last map[int]uint64
}

func newPositions(st journal.Store) *positions { return &positions{st: st, last: map[int]uint64{}} }

// record checks the positions of r, an append of n events to stream, and
// remembers them.
func (ps *positions) record(t testing.TB, r journal.AppendResult, stream string, n int) journal.AppendResult {
	t.Helper()
	part := ps.st.PartitionOf(stream)
	prev := ps.last[part]
	ok := r.Partition == part && r.LastPosition-r.FirstPosition == uint64(n-1) && r.FirstPosition > prev
	if !gaps[ps.st] {
		ok = ok && r.FirstPosition == prev+1
	}
	if !ok {
		t.Fatalf("append of %d events to %s: %+v, after position %d of partition %d", n, stream, r, prev, part)
	}
	ps.last[part] = r.LastPosition
	return r
}

func (ps *positions) heads() []uint64 {
	h := make([]uint64, ps.st.Partitions())
	for p := range h {
		h[p] = ps.last[p]
	}
	return h
}

func sameEvent(t *testing.T, got, want journal.Event) {
	t.Helper()
	g, w := got, want
	g.Time, w.Time = time.Time{}, time.Time{}
	if len(g.Payload) == 0 {
		g.Payload = nil
	}
	if len(w.Payload) == 0 {
		w.Payload = nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("event differs:\n got %+v\nwant %+v", got, want)
	}
}

func testAppendAndRead(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	rich := journal.Event{
		Type: "Opened", ContentType: "application/x-protobuf", Payload: []byte{0, 1, 2, 0xff},
		Tags: []string{"vip", "eu"}, Metadata: map[string]string{"correlation": "c-1", "causation": "cmd-9"},
	}
	before := time.Now().Add(-time.Second)
	ps := newPositions(st)
	r1 := ps.record(t, MustAppend(t, st, "account/1", 0, rich), "account/1", 1)
	r2 := ps.record(t, MustAppend(t, st, "account/2", 0, Ev("Opened", "b")), "account/2", 1)
	r3 := ps.record(t, MustAppend(t, st, "account/1", 1, Ev("Deposited", "c"), Ev("Deposited", "d")), "account/1", 2)
	result := func(r journal.AppendResult, firstSeq, lastSeq uint64) journal.AppendResult {
		return journal.AppendResult{FirstSequence: firstSeq, LastSequence: lastSeq, Partition: r.Partition, FirstPosition: r.FirstPosition, LastPosition: r.LastPosition}
	}
	want := []journal.AppendResult{
		result(r1, 1, 1),
		result(r2, 1, 1),
		result(r3, 2, 3),
	}
	if got := r3.Token(); got.Position(r3.Partition) != r3.LastPosition {
		t.Fatalf("token %v of %+v", got, r3)
	}
	for i, got := range []journal.AppendResult{r1, r2, r3} {
		if !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("append %d: %+v, want %+v", i, got, want[i])
		}
	}
	evs := Collect(t, st.Read(ctx, "account/1", 0, 0))
	if len(evs) != 3 {
		t.Fatalf("read %d events, want 3", len(evs))
	}
	w := rich
	w.Stream, w.Sequence, w.Partition, w.Position = "account/1", 1, r1.Partition, r1.FirstPosition
	sameEvent(t, evs[0], w)
	for i, e := range evs {
		if e.Sequence != uint64(i+1) || e.Stream != "account/1" {
			t.Fatalf("event %d: stream %q sequence %d", i, e.Stream, e.Sequence)
		}
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Second)) {
			t.Fatalf("event %d: time %v", i, e.Time)
		}
		if i > 0 && e.Time.Before(evs[i-1].Time) {
			t.Fatalf("time goes backwards: %v then %v", evs[i-1].Time, e.Time)
		}
	}
	if string(evs[2].Payload) != "d" || evs[2].Position != r3.LastPosition || evs[2].Partition != r3.Partition {
		t.Fatalf("last event %+v", evs[2])
	}
	// Changing what the store returned must not change what it holds.
	evs[0].Payload[0] = 0x7f
	again := Collect(t, st.Read(ctx, "account/1", 1, 1))
	if again[0].Payload[0] != 0 {
		t.Fatal("the store shares payload memory with its callers")
	}
	if got := Collect(t, st.Read(ctx, "account/404", 0, 0)); len(got) != 0 {
		t.Fatalf("unknown stream yields %d events", len(got))
	}
	all := CheckGlobalLog(t, st)
	if len(all) != 4 {
		t.Fatalf("log %+v", all)
	}
	stats, err := st.Stats(ctx)
	if err != nil || !reflect.DeepEqual(stats, journal.Stats{Streams: 2, Events: 4, Heads: ps.heads()}) {
		t.Fatalf("stats %+v %v, want heads %v", stats, err, ps.heads())
	}
}

func testConflicts(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	MustAppend(t, st, "order/1", 0, Ev("Placed", ""), Ev("Paid", ""))
	tests := []struct {
		name     string
		stream   string
		expected uint64
		actual   uint64
	}{
		{name: "new stream expected non-zero", stream: "order/2", expected: 5, actual: 0},
		{name: "stale", stream: "order/1", expected: 1, actual: 2},
		{name: "ahead", stream: "order/1", expected: 3, actual: 2},
		{name: "existing stream expected zero", stream: "order/1", expected: 0, actual: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.Append(ctx, journal.AppendRequest{Stream: tt.stream, Expected: tt.expected, Events: []journal.Event{Ev("X", "")}})
			var ce *journal.ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *ConflictError", err)
			}
			if *ce != (journal.ConflictError{Stream: tt.stream, Expected: tt.expected, Actual: tt.actual}) {
				t.Fatalf("conflict %+v", *ce)
			}
			if !strings.Contains(err.Error(), tt.stream) {
				t.Fatalf("message %q does not name the stream", err)
			}
		})
	}
	if total(st) != 2 {
		t.Fatalf("conflicts wrote events: %d events", total(st))
	}
	if r := MustAppend(t, st, "order/1", journal.ExpectAny, Ev("Shipped", "")); r.FirstSequence != 3 {
		t.Fatalf("ExpectAny appended at %d", r.FirstSequence)
	}
	if r := MustAppend(t, st, "order/1", 3, Ev("Delivered", "")); r.FirstSequence != 4 || (!s.Gaps && r.LastPosition != 4) || r.Partition != st.PartitionOf("order/1") {
		t.Fatalf("append %+v", r)
	}
	CheckGlobalLog(t, st)
}

func testAtomic(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	MustAppend(t, st, "cart/1", 0, Ev("Created", ""))
	bad := []struct {
		name  string
		evs   []journal.Event
		check func(error) bool
	}{
		{name: "empty type in the middle", evs: []journal.Event{Ev("A", ""), {}, Ev("C", "")},
			check: func(err error) bool { return errors.Is(err, journal.ErrInvalid) }},
		{name: "too large last event", evs: []journal.Event{Ev("A", ""), Ev("B", strings.Repeat("x", s.MaxEventSize+1))},
			check: func(err error) bool {
				var tl *journal.TooLargeError
				return errors.As(err, &tl) && tl.Index == 1 && tl.Stream == "cart/1" && tl.Limit == s.MaxEventSize
			}},
		{name: "bad tag", evs: []journal.Event{Ev("A", ""), {Type: "B", Tags: []string{"a\x00b"}}},
			check: func(err error) bool { return errors.Is(err, journal.ErrInvalid) }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.Append(ctx, journal.AppendRequest{Stream: "cart/1", Expected: 1, Events: tt.evs})
			if err == nil || !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if n := len(Collect(t, st.Read(ctx, "cart/1", 0, 0))); n != 1 {
				t.Fatalf("a failed append left %d events", n)
			}
		})
	}
	// A big append lands whole, with contiguous sequences and positions.
	evs := make([]journal.Event, 500)
	for i := range evs {
		evs[i] = Ev("Added", fmt.Sprint(i))
	}
	MustAppend(t, st, "cart/2", 0, Ev("Created", ""))
	r := MustAppend(t, st, "cart/1", 1, evs...)
	first := r.FirstPosition
	wantFirst := uint64(2) // after cart/1's first event
	if st.PartitionOf("cart/2") == st.PartitionOf("cart/1") {
		wantFirst = 3 // and cart/2's
	}
	if r.FirstSequence != 2 || r.LastSequence != 501 || r.LastPosition-r.FirstPosition != 499 || (!s.Gaps && first != wantFirst) {
		t.Fatalf("result %+v, want 500 consecutive positions from %d", r, wantFirst)
	}
	got := Collect(t, st.Read(ctx, "cart/1", 2, 0))
	for i, e := range got {
		if string(e.Payload) != fmt.Sprint(i) || e.Position != first+uint64(i) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	// Just under the limit is accepted.
	MustAppend(t, st, "cart/3", 0, Ev("Big", strings.Repeat("y", s.MaxEventSize/2)))
	CheckGlobalLog(t, st)
}

func testInvalid(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	one := []journal.Event{Ev("A", "")}
	appends := []struct {
		name string
		req  journal.AppendRequest
	}{
		{name: "empty stream", req: journal.AppendRequest{Events: one}},
		{name: "no kind", req: journal.AppendRequest{Stream: "/1", Events: one}},
		{name: "no id", req: journal.AppendRequest{Stream: "account/", Events: one}},
		{name: "no slash", req: journal.AppendRequest{Stream: "account", Events: one}},
		{name: "NUL", req: journal.AppendRequest{Stream: "account/a\x00b", Events: one}},
		{name: "too long", req: journal.AppendRequest{Stream: "a/" + strings.Repeat("x", 1100), Events: one}},
		{name: "no events", req: journal.AppendRequest{Stream: "account/1"}},
		{name: "empty type", req: journal.AppendRequest{Stream: "account/1", Events: []journal.Event{{Payload: []byte("x")}}}},
		{name: "empty tag", req: journal.AppendRequest{Stream: "account/1", Events: []journal.Event{{Type: "A", Tags: []string{""}}}}},
		{name: "empty metadata key", req: journal.AppendRequest{Stream: "account/1", Events: []journal.Event{{Type: "A", Metadata: map[string]string{"": "v"}}}}},
		{name: "reply without key", req: journal.AppendRequest{Stream: "account/1", Events: one, Reply: []byte("r")}},
	}
	for _, tt := range appends {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := st.Append(ctx, tt.req); !errors.Is(err, journal.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("reads", func(t *testing.T) {
		for name, err := range map[string]error{
			"read":            firstErr(st.Read(ctx, "nokind", 0, 0)),
			"filter both":     firstErr(st.ReadAll(ctx, 0, 0, journal.Filter{Kind: "a", Tag: "b"}, 0)),
			"filter kind '/'": firstErr(st.ReadAll(ctx, 0, 0, journal.Filter{Kind: "a/b"}, 0)),
			"partition -1":    firstErr(st.ReadAll(ctx, -1, 0, journal.Filter{}, 0)),
			"partition n":     firstErr(st.ReadAll(ctx, st.Partitions(), 0, journal.Filter{}, 0)),
			"wait partition n": func() error {
				_, err := st.WaitPosition(ctx, st.Partitions(), 0)
				return err
			}(),
			"streams kind":   firstErr(st.Streams(ctx, "a/b")),
			"snapshot save":  st.SaveSnapshot(ctx, journal.Snapshot{Stream: "x", Sequence: 1}),
			"snapshot seq 0": st.SaveSnapshot(ctx, journal.Snapshot{Stream: "x/1"}),
			"tombstone":      st.Tombstone(ctx, ""),
			"info":           func() error { _, err := st.Info(ctx, "x"); return err }(),
			"load":           func() error { _, err := st.LoadSnapshot(ctx, "/x"); return err }(),
		} {
			if !errors.Is(err, journal.ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
	})
	if total(st) != 0 {
		t.Fatalf("invalid input wrote events")
	}
	if n := len(Collect(t, st.Streams(ctx, ""))); n != 0 {
		t.Fatalf("invalid input created %d streams", n)
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

func testConcurrent(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	const writers, appends = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*2)
	for w := range writers {
		wg.Add(2)
		go func() { // own stream, exact expected sequences, 1-3 events
			defer wg.Done()
			stream := fmt.Sprintf("w/%d", w)
			var last uint64
			for i := range appends {
				n := 1 + i%3
				evs := make([]journal.Event, n)
				for j := range evs {
					evs[j] = Ev("E", fmt.Sprintf("%d/%d/%d", w, i, j))
				}
				r, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: last, Events: evs})
				if err != nil {
					errs <- err
					return
				}
				if r.FirstSequence != last+1 || r.LastSequence != last+uint64(n) || r.LastPosition-r.FirstPosition != uint64(n-1) {
					errs <- fmt.Errorf("append result %+v after %d", r, last)
					return
				}
				last = r.LastSequence
			}
		}()
		go func() { // a shared stream with optimistic retries
			defer wg.Done()
			for i := 0; i < appends/4; {
				info, err := st.Info(ctx, "shared/x")
				if err != nil {
					errs <- err
					return
				}
				_, err = st.Append(ctx, journal.AppendRequest{Stream: "shared/x", Expected: info.LastSequence, Events: []journal.Event{Ev("S", fmt.Sprint(w))}})
				var ce *journal.ConflictError
				switch {
				case errors.As(err, &ce):
					continue
				case err != nil:
					errs <- err
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs := CheckGlobalLog(t, st)
	want := writers * (appends / 4)
	for i := range appends {
		want += writers * (1 + i%3)
	}
	if len(evs) != want {
		t.Fatalf("global log holds %d events, want %d", len(evs), want)
	}
	shared := Collect(t, st.Read(ctx, "shared/x", 0, 0))
	if len(shared) != writers*(appends/4) {
		t.Fatalf("shared stream holds %d events", len(shared))
	}
	for i := 1; i < len(shared); i++ {
		if shared[i].Position <= shared[i-1].Position || shared[i].Partition != shared[0].Partition {
			t.Fatal("stream order disagrees with its partition's order")
		}
	}
}

func testReadAll(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	type rec struct {
		stream string
		tags   []string
		pos    uint64
	}
	var appended []rec // in append order
	add := func(stream string, evs ...journal.Event) {
		r := MustAppend(t, st, stream, 0, evs...)
		for i, e := range evs {
			appended = append(appended, rec{stream, e.Tags, r.FirstPosition + uint64(i)})
		}
	}
	add("account/1", journal.Event{Type: "Opened", Tags: []string{"eu"}})
	add("order/1", journal.Event{Type: "Placed", Tags: []string{"eu", "big"}})
	add("account/2", journal.Event{Type: "Opened", Tags: []string{"us"}}, journal.Event{Type: "Closed", Tags: []string{"eu", "eu"}})
	add("accounting/1", journal.Event{Type: "Booked"})
	// expect lists, for one partition, the positions ReadAll must yield:
	// the partition's events in append order, at the positions their
	// appends reported (1, 2, ... in a gap-free store).
	expect := func(part int, from uint64, f journal.Filter, limit int) []uint64 {
		var out []uint64
		for _, r := range appended {
			if st.PartitionOf(r.stream) != part {
				continue
			}
			pos := r.pos
			if !s.Gaps && pos != uint64(len(out))+1 && from == 0 && f == (journal.Filter{}) && limit == 0 {
				t.Fatalf("gap-free store: position %d of partition %d", pos, part)
			}
			if pos < from || (f.Kind != "" && !strings.HasPrefix(r.stream, f.Kind+"/")) || (f.Tag != "" && !slices.Contains(r.tags, f.Tag)) {
				continue
			}
			if limit > 0 && len(out) >= limit {
				break
			}
			out = append(out, pos)
		}
		return out
	}
	tests := []struct {
		name  string
		from  uint64
		f     journal.Filter
		limit int
	}{
		{name: "all"},
		{name: "from", from: 3},
		{name: "limit", from: 2, limit: 2},
		{name: "past the end", from: 6},
		{name: "kind", f: journal.Filter{Kind: "account"}},
		{name: "kind from", from: 2, f: journal.Filter{Kind: "account"}},
		{name: "kind limit", f: journal.Filter{Kind: "account"}, limit: 1},
		{name: "kind no prefix match", f: journal.Filter{Kind: "accounting"}},
		{name: "unknown kind", f: journal.Filter{Kind: "nope"}},
		{name: "tag", f: journal.Filter{Tag: "eu"}},
		{name: "tag from", from: 3, f: journal.Filter{Tag: "eu"}},
		{name: "other tag", f: journal.Filter{Tag: "big"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := 0
			for p := range st.Partitions() {
				var got []uint64
				for _, e := range Collect(t, st.ReadAll(ctx, p, tt.from, tt.f, tt.limit)) {
					got = append(got, e.Position)
					if e.Stream == "" || e.Sequence == 0 || e.Type == "" || e.Partition != p {
						t.Fatalf("incomplete event %+v", e)
					}
				}
				if want := expect(p, tt.from, tt.f, tt.limit); !slices.Equal(got, want) {
					t.Fatalf("partition %d: positions %v, want %v", p, got, want)
				}
				seen += len(got)
			}
			if tt.name == "all" && seen != len(appended) {
				t.Fatalf("the partitions hold %d events, %d were appended", seen, len(appended))
			}
		})
	}
	// Stopping early is allowed.
	for range st.ReadAll(ctx, 0, 0, journal.Filter{}, 0) {
		break
	}
}

func testReadLimits(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	for i := range 10 {
		MustAppend(t, st, "log/1", uint64(i), Ev("E", fmt.Sprint(i+1)))
	}
	tests := []struct {
		name  string
		from  uint64
		limit int
		want  []uint64
	}{
		{name: "all", want: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{name: "from", from: 8, want: []uint64{8, 9, 10}},
		{name: "limit", limit: 2, want: []uint64{1, 2}},
		{name: "from and limit", from: 5, limit: 3, want: []uint64{5, 6, 7}},
		{name: "past the end", from: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			for _, e := range Collect(t, st.Read(ctx, "log/1", tt.from, tt.limit)) {
				got = append(got, e.Sequence)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("sequences %v, want %v", got, tt.want)
			}
		})
	}
}

func testWaitPosition(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	r := MustAppend(t, st, "a/1", 0, Ev("E", ""))
	part := r.Partition
	if p, err := st.WaitPosition(ctx, part, 0); p != r.LastPosition || err != nil {
		t.Fatalf("WaitPosition(0) = %d, %v", p, err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	// The first event's position is 1 only without gaps (a store may keep
	// its own records before it).
	if _, err := st.WaitPosition(short, part, r.LastPosition); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitPosition past the end: %v", err)
	}
	got := make(chan uint64, 1)
	go func() {
		p, err := st.WaitPosition(ctx, part, r.LastPosition)
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	MustAppend(t, st, "a/1", 1, Ev("E", ""), Ev("E", ""))
	select {
	case p := <-got:
		if p <= r.LastPosition {
			t.Fatalf("woke at %d", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitPosition did not wake")
	}
}

func testInfo(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	info, err := st.Info(ctx, "user/unknown")
	if err != nil || info != (journal.StreamInfo{Stream: "user/unknown"}) {
		t.Fatalf("unknown stream: %+v %v", info, err)
	}
	MustAppend(t, st, "user/b", 0, Ev("E", ""))
	MustAppend(t, st, "user/a", 0, Ev("E", ""))
	MustAppend(t, st, "user/b", 1, Ev("E", ""), Ev("E", ""))
	MustAppend(t, st, "users/z", 0, Ev("E", ""))
	MustAppend(t, st, "group/1", 0, Ev("E", ""))
	info, err = st.Info(ctx, "user/b")
	if err != nil || info.LastSequence != 3 || info.Count != 3 || info.Tombstoned || info.First.IsZero() || info.Last.Before(info.First) {
		t.Fatalf("info %+v %v", info, err)
	}
	for kind, want := range map[string][]string{
		"user":  {"user/a", "user/b"},
		"users": {"users/z"},
		"":      {"group/1", "user/a", "user/b", "users/z"},
		"none":  nil,
	} {
		if got := Collect(t, st.Streams(ctx, kind)); !slices.Equal(got, want) {
			t.Fatalf("Streams(%q) = %v, want %v", kind, got, want)
		}
	}
}

func testSnapshots(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	if _, err := st.LoadSnapshot(ctx, "acc/1"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("missing snapshot: %v", err)
	}
	for i := range 5 {
		MustAppend(t, st, "acc/1", uint64(i), Ev("E", ""))
	}
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/1", Sequence: 3, Data: []byte("three")}); err != nil {
		t.Fatal(err)
	}
	snap, err := st.LoadSnapshot(ctx, "acc/1")
	if err != nil || snap.Stream != "acc/1" || snap.Sequence != 3 || string(snap.Data) != "three" || snap.Time.IsZero() {
		t.Fatalf("snapshot %+v %v", snap, err)
	}
	// An older snapshot does not replace a newer one; an equal or newer does.
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/1", Sequence: 2, Data: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	if snap, _ := st.LoadSnapshot(ctx, "acc/1"); string(snap.Data) != "three" {
		t.Fatalf("older snapshot replaced newer: %q", snap.Data)
	}
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/1", Sequence: 5, Data: bytes.Repeat([]byte{7}, 100_000)}); err != nil {
		t.Fatal(err)
	}
	if snap, _ := st.LoadSnapshot(ctx, "acc/1"); snap.Sequence != 5 || len(snap.Data) != 100_000 {
		t.Fatalf("newer snapshot: seq %d, %d bytes", snap.Sequence, len(snap.Data))
	}
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/1", Sequence: 6}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("snapshot past the end: %v", err)
	}
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/2", Sequence: 1}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("snapshot of an empty stream: %v", err)
	}
	// Events are kept by default.
	if n := len(Collect(t, st.Read(ctx, "acc/1", 0, 0))); n != 5 {
		t.Fatalf("%d events after snapshots", n)
	}
}

func testTombstone(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	MustAppend(t, st, "acc/1", 0, Ev("Opened", ""), Ev("Closed", ""))
	for range 2 {
		if err := st.Tombstone(ctx, "acc/1"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/1", Expected: journal.ExpectAny, Events: []journal.Event{Ev("X", "")}})
	if !errors.Is(err, journal.ErrTombstoned) {
		t.Fatalf("append to tombstoned stream: %v", err)
	}
	if n := len(Collect(t, st.Read(ctx, "acc/1", 0, 0))); n != 2 {
		t.Fatalf("tombstoned stream reads %d events", n)
	}
	info, err := st.Info(ctx, "acc/1")
	if err != nil || !info.Tombstoned || info.LastSequence != 2 {
		t.Fatalf("info %+v %v", info, err)
	}
	if err := st.Tombstone(ctx, "acc/never"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/never", Events: []journal.Event{Ev("X", "")}}); !errors.Is(err, journal.ErrTombstoned) {
		t.Fatalf("append to reserved stream: %v", err)
	}
	if total(st) != 2 {
		t.Fatalf("%d events", total(st))
	}
}

func testIdempotency(t *testing.T, s Suite) {
	st := open(t, s)
	ctx := context.Background()
	req := journal.AppendRequest{Stream: "acc/1", Events: []journal.Event{Ev("Deposited", "5"), Ev("Fee", "1")}, IdempotencyKey: "cmd-1", Reply: []byte("ok:5")}
	first, err := st.Append(ctx, req)
	if err != nil || first.Duplicate || string(first.Reply) != "ok:5" {
		t.Fatalf("first %+v %v", first, err)
	}
	MustAppend(t, st, "acc/1", 2, Ev("Other", ""))
	// A repeat returns the first result even with a stale Expected.
	again, err := st.Append(ctx, req)
	if err != nil || !again.Duplicate || string(again.Reply) != "ok:5" ||
		again.FirstSequence != first.FirstSequence || again.LastPosition != first.LastPosition {
		t.Fatalf("repeat %+v %v", again, err)
	}
	if total(st) != 3 {
		t.Fatalf("repeat appended: %d events", total(st))
	}
	// The key is per stream.
	other := req
	other.Stream = "acc/2"
	if r, err := st.Append(ctx, other); err != nil || r.Duplicate {
		t.Fatalf("same key on another stream: %+v %v", r, err)
	}
	// Concurrent repeats append once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	dups := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/3", Expected: journal.ExpectAny, Events: []journal.Event{Ev("E", "")}, IdempotencyKey: "k"})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if r.Duplicate {
				dups++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if dups != 7 || len(Collect(t, st.Read(ctx, "acc/3", 0, 0))) != 1 {
		t.Fatalf("%d duplicates of 8 concurrent repeats", dups)
	}
	// A key appended as never used before (KeyUnused) is recorded like
	// any other: its repeat is a repeat.
	fresh := journal.AppendRequest{Stream: "acc/4", Events: []journal.Event{Ev("E", "")}, IdempotencyKey: "fresh", Reply: []byte("r4"), KeyUnused: true}
	r1, err := st.Append(ctx, fresh)
	if err != nil || r1.Duplicate {
		t.Fatalf("append with an unused key: %+v %v", r1, err)
	}
	fresh.KeyUnused, fresh.Expected = false, journal.ExpectAny
	r2, err := st.Append(ctx, fresh)
	if err != nil || !r2.Duplicate || string(r2.Reply) != "r4" || r2.LastPosition != r1.LastPosition {
		t.Fatalf("repeat of a key first appended as unused: %+v %v", r2, err)
	}
}

func testClose(t *testing.T, s Suite) {
	st := s.Open(t)
	ctx := context.Background()
	MustAppend(t, st, "a/1", 0, Ev("E", ""))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "a/1", Expected: 1, Events: []journal.Event{Ev("E", "")}}); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
	for name, err := range map[string]error{
		"read":      firstErr(st.Read(ctx, "a/1", 0, 0)),
		"readall":   firstErr(st.ReadAll(ctx, 0, 0, journal.Filter{}, 0)),
		"streams":   firstErr(st.Streams(ctx, "")),
		"info":      func() error { _, err := st.Info(ctx, "a/1"); return err }(),
		"snapshot":  st.SaveSnapshot(ctx, journal.Snapshot{Stream: "a/1", Sequence: 1}),
		"load":      func() error { _, err := st.LoadSnapshot(ctx, "a/1"); return err }(),
		"tombstone": st.Tombstone(ctx, "a/1"),
		"wait":      func() error { _, err := st.WaitPosition(ctx, 0, 5); return err }(),
	} {
		if !errors.Is(err, journal.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

func testCanceled(t *testing.T, s Suite) {
	st := open(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "a/1", Events: []journal.Event{Ev("E", "")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a canceled context: %v", err)
	}
	if total(st) != 0 {
		t.Fatal("canceled append was written")
	}
	MustAppend(t, st, "a/1", 0, Ev("E", ""))
	if err := firstErr(st.Read(ctx, "a/1", 0, 0)); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("read with a canceled context: %v", err)
	}
}

func testRestart(t *testing.T, s Suite) {
	if s.Reopen == nil {
		t.Skip("store has no Reopen")
	}
	st := s.Open(t)
	gaps[st] = s.Gaps
	ctx := context.Background()
	ps := newPositions(st)
	ps.record(t, MustAppend(t, st, "acc/1", 0, journal.Event{Type: "Opened", Tags: []string{"t"}, Metadata: map[string]string{"k": "v"}}), "acc/1", 1)
	ps.record(t, MustAppend(t, st, "acc/2", 0, Ev("Opened", "x"), Ev("Deposited", "y")), "acc/2", 2)
	keyed, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/1", Expected: 1, Events: []journal.Event{Ev("Deposited", "")}, IdempotencyKey: "k1", Reply: []byte("r")})
	if err != nil {
		t.Fatal(err)
	}
	ps.record(t, keyed, "acc/1", 1)
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "acc/2", Sequence: 2, Data: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	if err := st.Tombstone(ctx, "acc/2"); err != nil {
		t.Fatal(err)
	}
	before := CheckGlobalLog(t, st)
	infoBefore, _ := st.Info(ctx, "acc/1")
	for round := range 2 {
		st = s.Reopen(t, st)
		gaps[st] = s.Gaps
		ps.st = st
		t.Cleanup(func() { st.Close() })
		after := CheckGlobalLog(t, st)
		if len(after) != len(before) {
			t.Fatalf("round %d: %d events after restart, %d before", round, len(after), len(before))
		}
		for i := range after {
			sameEvent(t, after[i], before[i])
			if !after[i].Time.Equal(before[i].Time) {
				t.Fatalf("time changed across restart: %v vs %v", after[i].Time, before[i].Time)
			}
		}
		info, err := st.Info(ctx, "acc/1")
		if err != nil || info.LastSequence != 2 || info.Count != 2 || !info.First.Equal(infoBefore.First) || !info.Last.Equal(infoBefore.Last) {
			t.Fatalf("info after restart %+v (before %+v) %v", info, infoBefore, err)
		}
		if snap, err := st.LoadSnapshot(ctx, "acc/2"); err != nil || string(snap.Data) != "s" {
			t.Fatalf("snapshot after restart: %+v %v", snap, err)
		}
		if _, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/2", Expected: journal.ExpectAny, Events: []journal.Event{Ev("X", "")}}); !errors.Is(err, journal.ErrTombstoned) {
			t.Fatalf("tombstone lost on restart: %v", err)
		}
		r, err := st.Append(ctx, journal.AppendRequest{Stream: "acc/1", Expected: 0, Events: []journal.Event{Ev("Deposited", "")}, IdempotencyKey: "k1"})
		if err != nil || !r.Duplicate || string(r.Reply) != "r" || r.LastPosition != keyed.LastPosition || r.Partition != keyed.Partition {
			t.Fatalf("idempotency after restart: %+v (first %+v) %v", r, keyed, err)
		}
		stats, err := st.Stats(ctx)
		if err != nil || !reflect.DeepEqual(stats, journal.Stats{Streams: 2, Events: uint64(len(before)), Heads: ps.heads()}) {
			t.Fatalf("stats after restart %+v %v", stats, err)
		}
	}
	// Positions and sequences carry on.
	r := ps.record(t, MustAppend(t, st, "acc/1", 2, Ev("Withdrawn", "")), "acc/1", 1)
	if r.FirstSequence != 3 {
		t.Fatalf("append after restart %+v", r)
	}
	MustAppend(t, st, "acc/3", 0, Ev("Opened", ""))
	CheckGlobalLog(t, st)
}
