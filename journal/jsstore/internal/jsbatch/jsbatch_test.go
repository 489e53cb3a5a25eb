package jsbatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A batch lands whole, contiguous, in order, with each message's headers.
func TestPublishLands(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			s := start(t, kind)
			ctx := testCtx(t, time.Minute)
			for _, skip := range []bool{false, true} {
				name := fmt.Sprintf("P%v", skip)
				p := newPublisher(t, s.connect(s.size()-1), Config{SkipFirstAck: skip})
				st := s.createStream(ctx, p.js, name, strings.ToLower(name)+".>")
				subj := strings.ToLower(name)
				first := batchOf(subj, "a", 10)
				ack, err := p.Publish(ctx, name, 0, first)
				if err != nil {
					t.Fatal(err)
				}
				if want := (Ack{Stream: name, FirstSeq: 1, LastSeq: 10}); ack != want {
					t.Fatalf("ack %+v, want %+v", ack, want)
				}
				one := batchOf(subj, "b", 1)
				ack, err = p.Publish(ctx, name, 10, one)
				if err != nil {
					t.Fatal(err)
				}
				if want := (Ack{Stream: name, FirstSeq: 11, LastSeq: 11}); ack != want {
					t.Fatalf("ack %+v, want %+v", ack, want)
				}
				if last, err := p.LastSequence(ctx, name); err != nil || last != 11 {
					t.Fatalf("LastSequence = %d, %v; want 11", last, err)
				}
				got := readAll(ctx, t, st)
				want := append(first, one...)
				if len(got) != len(want) {
					t.Fatalf("stream holds %d messages, want %d", len(got), len(want))
				}
				for i, m := range got {
					w := want[i]
					if m.Sequence != uint64(i+1) || m.Subject != w.Subject || !bytes.Equal(m.Data, w.Data) {
						t.Errorf("seq %d: %s %q, want seq %d %s %q", m.Sequence, m.Subject, m.Data, i+1, w.Subject, w.Data)
					}
					for _, k := range []string{HeaderMsgID, "Troupe-Type"} {
						if m.Header.Get(k) != w.Header.Get(k) {
							t.Errorf("seq %d: %s = %q, want %q", m.Sequence, k, m.Header.Get(k), w.Header.Get(k))
						}
					}
				}
			}
		})
	}
}

// A batch with a stale expected sequence lands nothing and reports the
// actual sequence.
func TestStaleExpected(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			s := start(t, kind)
			ctx := testCtx(t, time.Minute)
			p := newPublisher(t, s.connect(0), Config{})
			st := s.createStream(ctx, p.js, "S", "s.>")
			if _, err := p.Publish(ctx, "S", 0, batchOf("s", "a", 5)); err != nil {
				t.Fatal(err)
			}
			for _, expected := range []uint64{0, 4, 6, 1000} {
				_, err := p.Publish(ctx, "S", expected, batchOf("s", fmt.Sprint("x", expected), 3))
				var ce *ConflictError
				if !errors.As(err, &ce) {
					t.Fatalf("expected %d: %v, want a *ConflictError", expected, err)
				}
				if want := (ConflictError{Stream: "S", Expected: expected, Actual: 5, ActualKnown: true}); *ce != want {
					t.Errorf("expected %d: %+v, want %+v", expected, *ce, want)
				}
			}
			if n := len(readAll(ctx, t, st)); n != 5 {
				t.Fatalf("stream holds %d messages, want 5", n)
			}
		})
	}
}

// Two writers race with the same expected sequence: exactly one batch
// lands each round, and the log holds whole batches of one writer each.
func TestRacingWriters(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			s := start(t, kind)
			ctx := testCtx(t, 2*time.Minute)
			pubs := []*Publisher{newPublisher(t, s.connect(0), Config{}), newPublisher(t, s.connect(s.size()-1), Config{})}
			st := s.createStream(ctx, pubs[0].js, "S", "s.>")
			const rounds, n = 20, 30
			var last uint64
			for round := range rounds {
				errs := make([]error, len(pubs))
				var wg sync.WaitGroup
				startc := make(chan struct{})
				for w, p := range pubs {
					wg.Go(func() {
						<-startc
						_, errs[w] = p.Publish(ctx, "S", last, batchOf("s", fmt.Sprintf("r%d-w%d", round, w), n))
					})
				}
				close(startc)
				wg.Wait()
				won := 0
				for w, err := range errs {
					var ce *ConflictError
					switch {
					case err == nil:
						won++
					case errors.As(err, &ce), errors.Is(err, ErrInFlight):
					default:
						t.Fatalf("round %d writer %d: %v", round, w, err)
					}
				}
				if won != 1 {
					t.Fatalf("round %d: %d writers landed (%v), want exactly 1", round, won, errs)
				}
				last += n
			}
			got := readAll(ctx, t, st)
			if len(got) != rounds*n {
				t.Fatalf("stream holds %d messages, want %d", len(got), rounds*n)
			}
			for i := 0; i < len(got); i += n {
				tag, _, _ := strings.Cut(got[i].Header.Get(HeaderMsgID), "-w")
				writer := got[i].Header.Get(HeaderMsgID)[:len(tag)+3]
				for j := range n {
					if id, want := got[i+j].Header.Get(HeaderMsgID), fmt.Sprintf("%s-%d", writer, j); id != want {
						t.Fatalf("seq %d: id %q, want %q (a batch mixed or cut)", got[i+j].Sequence, id, want)
					}
				}
			}
		})
	}
}

// 1,000 messages land as one batch; 1,001, or a message over the max
// payload, are refused before anything is sent.
func TestLimits(t *testing.T) {
	s := start(t, "r3")
	ctx := testCtx(t, time.Minute)
	nc := s.connect(0)
	p := newPublisher(t, nc, Config{})
	st := s.createStream(ctx, p.js, "S", "s.>")
	ack, err := p.Publish(ctx, "S", 0, batchOf("s", "k", 1000))
	if err != nil {
		t.Fatal(err)
	}
	if ack.FirstSeq != 1 || ack.LastSeq != 1000 {
		t.Fatalf("ack %+v", ack)
	}
	// A publisher whose connection is closed: anything sent would fail
	// with ErrUnavailable, so ErrTooLarge proves nothing was sent.
	dead := newPublisher(t, s.connect(0), Config{})
	dead.nc.Close()
	big := batchOf("s", "big", 1)
	big[0].Data = make([]byte, nc.MaxPayload())
	for _, c := range []struct {
		name string
		msgs []*nats.Msg
	}{
		{"1001 messages", batchOf("s", "l", 1001)},
		{"over the max payload with headers", big},
	} {
		for _, pub := range []*Publisher{p, dead} {
			if _, err := pub.Publish(ctx, "S", 1000, c.msgs); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s: %v, want ErrTooLarge", c.name, err)
			}
		}
	}
	if _, err := dead.Publish(ctx, "S", 1000, batchOf("s", "m", 2)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("on a closed connection: %v, want ErrUnavailable", err)
	}
	if _, err := New(nc, Config{MaxMessages: 1001}); !errors.Is(err, ErrInvalid) {
		t.Errorf("MaxMessages 1001: %v, want ErrInvalid", err)
	}
	small := newPublisher(t, nc, Config{MaxMessages: 10})
	if _, err := small.Publish(ctx, "S", 1000, batchOf("s", "n", 11)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("11 messages with MaxMessages 10: %v, want ErrTooLarge", err)
	}
	if n := len(readAll(ctx, t, st)); n != 1000 {
		t.Fatalf("stream holds %d messages, want 1000", n)
	}
}

// Malformed batches are refused before anything is sent.
func TestInvalid(t *testing.T) {
	s := start(t, "lone")
	ctx := testCtx(t, time.Minute)
	p := newPublisher(t, s.connect(0), Config{})
	st := s.createStream(ctx, p.js, "S", "s.>")
	dupID := batchOf("s", "d", 3)
	dupID[2].Header.Set(HeaderMsgID, dupID[0].Header.Get(HeaderMsgID))
	lastMsgID := batchOf("s", "e", 2)
	lastMsgID[1].Header.Set(headerExpectedLastMsgID, "x")
	noSubject := batchOf("s", "f", 2)
	noSubject[1].Subject = ""
	for _, c := range []struct {
		name   string
		stream string
		msgs   []*nats.Msg
		want   error
	}{
		{"no messages", "S", nil, ErrInvalid},
		{"no stream", "", batchOf("s", "g", 1), ErrInvalid},
		{"nil message", "S", []*nats.Msg{nil}, ErrInvalid},
		{"no subject", "S", noSubject, ErrInvalid},
		{"two messages with one id", "S", dupID, ErrInvalid},
		{"expected last msg id", "S", lastMsgID, ErrInvalid},
		{"subjects of no stream", "S", batchOf("other", "h", 2), ErrUnavailable},
		{"subjects of another stream", "T", batchOf("s", "i", 2), ErrInvalid},
		{"an unknown stream, one message", "T", batchOf("s", "j", 1), ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := p.Publish(ctx, c.stream, 0, c.msgs); !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		})
	}
	if n := len(readAll(ctx, t, st)); n != 0 {
		t.Fatalf("stream holds %d messages, want 0", n)
	}
}

// Retrying a batch that landed, with the same message ids, duplicates
// nothing: the server refuses the whole retry (10201) and Resolve finds
// the batch.
func TestRetryLandedBatch(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			s := start(t, kind)
			ctx := testCtx(t, time.Minute)
			p := newPublisher(t, s.connect(0), Config{})
			st := s.createStream(ctx, p.js, "S", "s.>")
			if _, err := p.Publish(ctx, "S", 0, batchOf("s", "pre", 3)); err != nil {
				t.Fatal(err)
			}
			msgs := batchOf("s", "a", 10)
			ack, err := p.Publish(ctx, "S", 3, msgs)
			if err != nil {
				t.Fatal(err)
			}
			for _, expected := range []uint64{3, 13} { // the same fence, and the current one
				_, err := p.Publish(ctx, "S", expected, msgs)
				if !errors.Is(err, ErrDuplicate) {
					t.Errorf("retry at %d: %v, want ErrDuplicate", expected, err)
				}
				var se *ServerError
				if !errors.As(err, &se) || se.Code != 10201 {
					t.Errorf("retry at %d: %v, want err_code 10201", expected, err)
				}
			}
			got, err := p.Resolve(ctx, "S", 3, msgs)
			if err != nil || got != ack {
				t.Errorf("Resolve = %+v, %v; want %+v", got, err, ack)
			}
			// Resolve of a batch that did not land, at the head and behind it.
			other := batchOf("s", "b", 2)
			if _, err := p.Resolve(ctx, "S", 13, other); !errors.Is(err, ErrNotLanded) {
				t.Errorf("Resolve at the head: %v, want ErrNotLanded", err)
			}
			var ce *ConflictError
			if _, err := p.Resolve(ctx, "S", 0, other); !errors.As(err, &ce) || ce.Actual != 13 {
				t.Errorf("Resolve behind: %v, want a conflict at 13", err)
			}
			if _, err := p.Resolve(ctx, "S", 20, other); !errors.As(err, &ce) || ce.Actual != 13 {
				t.Errorf("Resolve ahead: %v, want a conflict at 13", err)
			}
			noID := batchOf("s", "c", 2)
			noID[0].Header.Del(HeaderMsgID)
			if _, err := p.Resolve(ctx, "S", 3, noID); !errors.Is(err, ErrInvalid) {
				t.Errorf("Resolve without an id: %v, want ErrInvalid", err)
			}
			if n := len(readAll(ctx, t, st)); n != 13 {
				t.Fatalf("stream holds %d messages, want 13", n)
			}
			if _, err := p.LastSequence(ctx, "NOPE"); !errors.Is(err, ErrNoStream) {
				t.Errorf("LastSequence of no stream: %v, want ErrNoStream", err)
			}
		})
	}
}

// A server is stopped while a writer publishes batches back to back.
// Every attempt ends in a definite outcome or an unknown one that Resolve
// settles; afterwards the log holds each batch whole, once, or not at all,
// never a prefix.
func TestServerStoppedMidway(t *testing.T) {
	for _, c := range []struct {
		on     string
		skip   bool
		staged bool // stop the leader once batch 5 is staged, before its commit
	}{{"leader", false, false}, {"follower", true, false}, {"leader", false, true}, {"follower", false, true}} {
		on := c.on
		name := fmt.Sprintf("client on the %s, SkipFirstAck %v", c.on, c.skip)
		if c.staged {
			name = fmt.Sprintf("client on the %s, stopped between staging and commit", c.on)
		}
		t.Run(name, func(t *testing.T) {
			s := start(t, "r3")
			ctx := testCtx(t, 60*time.Second)
			admin := newPublisher(t, s.connect(0), Config{})
			st := s.createStream(ctx, admin.js, "S", "s.>")
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			leader := -1
			for i := range s.size() {
				if s.c.Name(i) == info.Cluster.Leader {
					leader = i
				}
			}
			if leader < 0 {
				t.Fatalf("leader %q not found", info.Cluster.Leader)
			}
			client := leader
			if on == "follower" {
				client = (leader + 1) % s.size()
			}
			p := newPublisher(t, s.connect(client), Config{Timeout: 2 * time.Second, SkipFirstAck: c.skip})

			const n, want = 200, 40
			var (
				mu       sync.Mutex
				outcomes = map[string]int{}
				landed   int
			)
			stopAt := make(chan struct{})
			stopped := make(chan struct{})
			done := make(chan error, 1)
			cur := -1 // the batch being published, for the hook
			if c.staged {
				p.beforeCommit = func() {
					if cur == 5 && stopAt != nil {
						close(stopAt)
						stopAt = nil
						<-stopped
					}
				}
			}
			stopSignal := stopAt
			go func() {
				done <- func() error {
					var last uint64
					for b := 0; b < want; b++ {
						cur = b
						if b == 5 && !c.staged {
							close(stopAt)
						}
						msgs := batchOf("s", fmt.Sprintf("b%03d", b), n)
						for attempt := 0; ; attempt++ {
							if ctx.Err() != nil {
								return fmt.Errorf("batch %d: %w", b, ctx.Err())
							}
							ack, err := p.Publish(ctx, "S", last, msgs)
							var ce *ConflictError
							switch {
							case errors.Is(err, ErrUnknownOutcome), errors.As(err, &ce), errors.Is(err, ErrDuplicate):
								ack, err = resolve(ctx, p, last, msgs)
							}
							mu.Lock()
							outcomes[outcome(err)]++
							mu.Unlock()
							if err != nil && attempt%20 == 0 {
								t.Logf("batch %d attempt %d: %v", b, attempt, err)
							}
							if err == nil {
								if ack.FirstSeq != last+1 || ack.LastSeq != last+n {
									return fmt.Errorf("batch %d: ack %+v after %d", b, ack, last)
								}
								last = ack.LastSeq
								mu.Lock()
								landed++
								mu.Unlock()
								break
							}
							switch {
							case errors.Is(err, ErrNotLanded), errors.Is(err, ErrUnavailable), errors.Is(err, ErrInFlight),
								errors.Is(err, ErrIncomplete), errors.Is(err, ErrTooManyBatches):
								time.Sleep(50 * time.Millisecond) // back off, then the same batch again
							default:
								return fmt.Errorf("batch %d attempt %d: %w", b, attempt, err)
							}
						}
					}
					return nil
				}()
			}()
			select {
			case <-stopSignal:
			case err := <-done:
				t.Fatalf("writer ended early: %v", err)
			}
			s.c.Stop(leader)
			close(stopped)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			t.Logf("outcomes of attempts: %v", outcomes)

			// Read through a surviving server.
			rd := newPublisher(t, s.connect((leader+2)%s.size()), Config{})
			rst, err := rd.js.Stream(ctx, "S")
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(ctx, t, rst)
			if len(got) != landed*n {
				t.Fatalf("stream holds %d messages, want %d (%d batches)", len(got), landed*n, landed)
			}
			for i, m := range got {
				if id, want := m.Header.Get(HeaderMsgID), fmt.Sprintf("b%03d-%d", i/n, i%n); id != want {
					t.Fatalf("seq %d holds %q, want %q: a batch was cut, repeated or reordered", m.Sequence, id, want)
				}
			}
		})
	}
}

// resolve settles an unknown outcome: it asks until the stream has a
// leader to answer (bounded by ctx).
func resolve(ctx context.Context, p *Publisher, expected uint64, msgs []*nats.Msg) (Ack, error) {
	for {
		ack, err := p.Resolve(ctx, "S", expected, msgs)
		if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return ack, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// outcome names an error for the test's tally.
func outcome(err error) string {
	var ce *ConflictError
	for _, e := range []error{ErrNotLanded, ErrUnavailable, ErrInFlight, ErrIncomplete, ErrTooManyBatches, ErrDuplicate, ErrUnknownOutcome} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	switch {
	case err == nil:
		return "landed"
	case errors.As(err, &ce):
		return "conflict"
	}
	return "other: " + err.Error()
}
