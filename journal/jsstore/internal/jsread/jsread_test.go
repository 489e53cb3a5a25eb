package jsread_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/journal"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup starts one server and a stream S on s.> holding 100 messages,
// alternating subjects s.a and s.b, each with a header h = its index.
func setup(t *testing.T, direct bool) (*nats.Conn, context.Context) {
	t.Helper()
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowDirect: direct}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		m := nats.NewMsg("s.a")
		if i%2 == 1 {
			m.Subject = "s.b"
		}
		m.Header.Set("h", fmt.Sprint(i))
		m.Data = []byte(fmt.Sprint("payload ", i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	return nc, ctx
}

func newReader(t *testing.T, nc *nats.Conn, cfg jsread.Config) *jsread.Reader {
	t.Helper()
	r, err := jsread.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A direct batch holds what the leader's reads hold, one by one, with
// the stored headers only, and says how many more matches follow.
func TestDirectMatchesLeader(t *testing.T) {
	nc, ctx := setup(t, true)
	r := newReader(t, nc, jsread.Config{})
	for _, tt := range []struct {
		name        string
		from        uint64
		subject     string
		batch       int
		wantSeqs    []uint64
		wantPending uint64
	}{
		{"all from 1", 1, "", 5, []uint64{1, 2, 3, 4, 5}, 95},
		{"a subject", 1, "s.b", 3, []uint64{2, 4, 6}, 47},
		{"a wildcard from the middle", 98, "s.*", 10, []uint64{98, 99, 100}, 0},
		{"the last one", 99, "s.a", 10, []uint64{99}, 0},
		{"past the end", 101, "", 10, nil, 0},
		{"no match", 1, "s.c", 10, nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := r.Direct(ctx, "S", tt.from, tt.subject, tt.batch)
			if err != nil {
				t.Fatal(err)
			}
			if b.Pending != tt.wantPending || len(b.Msgs) != len(tt.wantSeqs) {
				t.Fatalf("got %d messages, pending %d; want %d, pending %d", len(b.Msgs), b.Pending, len(tt.wantSeqs), tt.wantPending)
			}
			for i, m := range b.Msgs {
				if m.Sequence != tt.wantSeqs[i] {
					t.Fatalf("message %d at %d, want %d", i, m.Sequence, tt.wantSeqs[i])
				}
				l, err := jsread.Leader(ctx, nc, "", "S", jsread.Query{Seq: m.Sequence})
				if err != nil {
					t.Fatal(err)
				}
				if l.Subject != m.Subject || string(l.Data) != string(m.Data) || !l.Time.Equal(m.Time) ||
					len(m.Header) != 1 || m.Header.Get("h") != l.Header.Get("h") || m.Header.Get("h") != fmt.Sprint(m.Sequence-1) {
					t.Fatalf("direct %+v, leader %+v", m, l)
				}
			}
		})
	}
}

func TestLeader(t *testing.T) {
	nc, ctx := setup(t, false)
	for _, tt := range []struct {
		name    string
		q       jsread.Query
		wantSeq uint64
		wantErr error
	}{
		{"by sequence", jsread.Query{Seq: 7}, 7, nil},
		{"next on a subject", jsread.Query{Seq: 7, NextBySubject: "s.b"}, 8, nil},
		{"last on a subject", jsread.Query{LastBySubject: "s.a"}, 99, nil},
		{"last on a wildcard", jsread.Query{LastBySubject: "s.*"}, 100, nil},
		{"past the end", jsread.Query{Seq: 101}, 0, jsread.ErrNotFound},
		{"no match", jsread.Query{LastBySubject: "s.c"}, 0, jsread.ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := jsread.Leader(ctx, nc, "", "S", tt.q)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err == nil && m.Sequence != tt.wantSeq {
				t.Fatalf("sequence %d, want %d", m.Sequence, tt.wantSeq)
			}
		})
	}
	if _, err := jsread.Leader(ctx, nc, "", "NOPE", jsread.Query{Seq: 1}); err == nil {
		t.Fatal("a stream that does not exist answered")
	}
}

// MaxBytes cuts a batch, after at least one message; a stream without
// AllowDirect has no responders; a closed Reader refuses.
func TestDirectLimitsAndErrors(t *testing.T) {
	nc, ctx := setup(t, true)
	small := newReader(t, nc, jsread.Config{MaxBytes: 1})
	b, err := small.Direct(ctx, "S", 1, "", 50)
	if err != nil || len(b.Msgs) != 1 || b.Pending != 99 {
		t.Fatalf("MaxBytes 1: %d messages, pending %d, %v; want 1, 99", len(b.Msgs), b.Pending, err)
	}
	r := newReader(t, nc, jsread.Config{})
	if _, err := r.Direct(ctx, "NOPE", 1, "", 5); !errors.Is(err, jsread.ErrNoResponders) {
		t.Fatalf("unknown stream: %v, want ErrNoResponders", err)
	}
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	if _, err := r.Direct(short, "S", 1, "", 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ended ctx: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Direct(ctx, "S", 1, "", 5); err == nil {
		t.Fatal("a closed Reader read")
	}
}

func TestDirectNotAllowed(t *testing.T) {
	nc, ctx := setup(t, false)
	r := newReader(t, nc, jsread.Config{})
	if _, err := r.Direct(ctx, "S", 1, "", 5); !errors.Is(err, jsread.ErrNoResponders) {
		t.Fatalf("stream without AllowDirect: %v, want ErrNoResponders", err)
	}
}

func TestServerSideErrorsAreUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jsread.APIError{Code: 503, ErrCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jsread.APIError{Code: 404, ErrCode: 10037, Description: "no message found"}, false},
		{&jsread.StatusError{Code: 503, Description: "No Responders"}, true},
		{&jsread.StatusError{Code: 408, Description: "Bad Request"}, false},
	} {
		if got := errors.Is(fmt.Errorf("read: %w", tc.err), journal.ErrUnavailable); got != tc.want {
			t.Errorf("%v: errors.Is ErrUnavailable = %v, want %v", tc.err, got, tc.want)
		}
	}
}
