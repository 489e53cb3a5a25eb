package jsbatch

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus"
	"github.com/troupe-dev/troupe/cluster/bus/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// servers is what a test runs against: a lone server (JetStream not
// clustered, R1 streams) or three clustered servers (R3 streams).
type servers struct {
	name     string
	replicas int
	c        *bustest.Cluster // nil for the lone server
	url      string           // the lone server's
	t        testing.TB
}

var kinds = []string{"lone", "r3"}

func start(t testing.TB, kind string) *servers {
	t.Helper()
	s := &servers{name: kind, t: t}
	switch kind {
	case "lone":
		s.replicas = 1
		b, err := bus.New(bus.Config{Name: "lone", Port: bus.RandomPort, StoreDir: filepath.Join(t.TempDir(), "js")})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		s.url = b.ClientURL()
	case "r3":
		s.replicas = 3
		s.c = bustest.Start(t, 3)
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	return s
}

// connect opens a client on server i (any server for the lone one).
func (s *servers) connect(i int) *nats.Conn {
	s.t.Helper()
	if s.c != nil {
		return s.c.Connect(i)
	}
	nc, err := nats.Connect(s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

func (s *servers) size() int {
	if s.c == nil {
		return 1
	}
	return s.c.Size()
}

// createStream creates an atomic-publish stream of the servers'
// replication, retrying while a fresh cluster's meta leader does not know
// every peer yet.
func (s *servers) createStream(ctx context.Context, js jetstream.JetStream, name string, subjects ...string) jetstream.Stream {
	s.t.Helper()
	cfg := jetstream.StreamConfig{
		Name: name, Subjects: subjects, Replicas: s.replicas, Storage: jetstream.FileStorage,
		AllowAtomicPublish: true, Duplicates: 2 * time.Minute,
	}
	var (
		st  jetstream.Stream
		err error
	)
	deadline := time.Now().Add(30 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err = js.CreateStream(actx, cfg)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("create stream %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Wait until the stream has a leader that answers.
	for {
		info, err := st.Info(ctx)
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "") {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("stream %s has no leader: %+v %v", name, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And until a publish through this connection's server reaches it
	// (the stream's interest crosses the routes a moment after the leader
	// is elected): a probe the stream refuses, so it stores nothing.
	probe := strings.Replace(strings.Replace(subjects[0], ">", "probe", 1), "*", "probe", -1)
	for {
		m := nats.NewMsg(probe)
		m.Header.Set("Nats-Expected-Last-Sequence", "4611686018427387904")
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.Conn().RequestMsgWithContext(actx, m)
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("stream %s does not answer publishes: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readAll reads every message of a stream, by sequence, from its leader.
func readAll(ctx context.Context, t testing.TB, st jetstream.Stream) []*jetstream.RawStreamMsg {
	t.Helper()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// batchOf builds n messages on subject prefix subj, with ids tag-i and a
// header of their own.
func batchOf(subj, tag string, n int) []*nats.Msg {
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		m := nats.NewMsg(fmt.Sprintf("%s.e%d", subj, i%7))
		m.Data = fmt.Appendf(nil, "%s/%d", tag, i)
		m.Header.Set(HeaderMsgID, fmt.Sprintf("%s-%d", tag, i))
		m.Header.Set("Troupe-Type", fmt.Sprintf("T%d", i))
		msgs[i] = m
	}
	return msgs
}

func newPublisher(t testing.TB, nc *nats.Conn, cfg Config) *Publisher {
	t.Helper()
	p, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
