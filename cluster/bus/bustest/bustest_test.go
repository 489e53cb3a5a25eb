package bustest_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// An R3 stream written through one server survives a restart of another
// and reads the same through every server.
func TestThreeServersReplicate(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := c.JetStream(0)
	var err error
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(100 * time.Millisecond) {
		// The meta leader may not know every peer yet right after forming.
		if _, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	// The new stream's leader may not be elected yet ("no response from
	// stream"): the first publish is retried, bounded.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, err = js.Publish(ctx, "r3.x", []byte("m0")); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal(err)
		}
	}
	for i := 1; i < 10; i++ {
		if _, err := js.Publish(ctx, "r3.x", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.Stop(2)
	if _, err := js.Publish(ctx, "r3.x", []byte("while s3 is down")); err != nil {
		t.Fatalf("a publish with two of three servers: %v", err)
	}
	c.Restart(2)
	for i := range c.Size() {
		s, err := c.JetStream(i).Stream(ctx, "R3")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			info, err := s.Info(ctx)
			if err == nil && info.State.Msgs == 11 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("through %s: %+v, %v; want 11 messages", c.Name(i), info, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A port chosen for a server that another process takes before the
// server listens (tests of other packages run beside these) costs a
// retry on new ports, not the test; and a server of another cluster on
// a port this one's routes dial does not join it.
func TestStartSurvivesATakenPort(t *testing.T) {
	other := bustest.Start(t, 2) // another test's cluster
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	otherRoute := bustest.PortOf(other.Bus(0).RouteAddr())
	// Chosen in this order: route and client port of server 1, 2, 3.
	// Server 2's route port is the other cluster's route listener, server
	// 3's client port a listener that is not NATS.
	free := bustest.FreePort
	bustest.TakePorts(free(t), free(t), otherRoute, free(t), free(t), held.Addr().(*net.TCPAddr).Port)
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The servers that started again are "offline" to the meta leader
	// until their next report: placement may refuse for a few seconds.
	cfg := jetstream.StreamConfig{Name: "TAKEN", Subjects: []string{"taken.>"}, Replicas: 3}
	_, err = c.JetStream(0).CreateStream(ctx, cfg)
	for err != nil && ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		_, err = c.JetStream(0).CreateStream(ctx, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.JetStream(2).Publish(ctx, "taken.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if st := c.Bus(i).State(); len(st.Routes) != 2 || st.MetaSize != 3 {
			t.Fatalf("server %d of the new cluster: %+v, want 2 routes and a meta group of 3", i, st)
		}
	}
	for i := range 2 {
		if st := other.Bus(i).State(); len(st.Routes) != 1 || st.MetaSize != 2 {
			t.Fatalf("server %d of the other cluster: %+v, want 1 route and a meta group of 2", i, st)
		}
	}
}
