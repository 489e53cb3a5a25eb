package bustest_test

import (
	"context"
	"fmt"
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
