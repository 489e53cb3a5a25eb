package topics_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/actors/topics"
)

// BenchmarkCore measures topic publish → actor delivery in process beside
// the raw ceiling measured in the same run: a NATS publish → subscribe
// callback on the same server, 128-byte messages.
func BenchmarkCore(b *testing.B) {
	payload := make([]byte, 128)
	b.Run("raw-nats-pub-sub", func(b *testing.B) {
		e := newEnv(b, topics.Config{})
		defer e.t.Close()
		var got atomic.Int64
		done := make(chan struct{})
		sub, err := e.bus.Conn().Subscribe("bench.raw", func(*nats.Msg) {
			if got.Add(1) == int64(b.N) {
				close(done)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		_ = sub.SetPendingLimits(-1, -1)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := e.bus.Conn().Publish("bench.raw", payload); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("topic-to-actor", func(b *testing.B) {
		e := newEnv(b, topics.Config{MaxPending: 1 << 30})
		defer e.t.Close()
		var got atomic.Int64
		done := make(chan struct{})
		props := actor.PropsFromFunc(func(c actor.Context) {
			if _, ok := c.Message().(*topics.Message); ok && got.Add(1) == int64(b.N) {
				close(done)
			}
		})
		ctx := context.Background()
		if _, err := e.t.Spawn(ctx, props, "bench.topic", topics.SubscribeOptions{}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := e.t.Publish(ctx, "bench.topic", payload, nil); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("delivered %d of %d", got.Load(), b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkDurable measures durable topic throughput (publish acked by the
// stream, delivered to an actor that acks) beside raw JetStream async
// publish into a stream on the same server.
func BenchmarkDurable(b *testing.B) {
	payload := make([]byte, 128)
	b.Run("raw-jetstream-async-publish", func(b *testing.B) {
		e := newEnv(b, topics.Config{})
		defer e.t.Close()
		js, err := jetstream.New(e.bus.Conn())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := js.PublishAsync("raw.x", payload, jetstream.WithStallWait(10*time.Second)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("async publishes not acked")
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("durable-topic-publish-to-actor-ack", func(b *testing.B) {
		e := newEnv(b, topics.Config{})
		defer e.t.Close()
		ctx := context.Background()
		if err := e.t.Declare(ctx, topics.Durable{Name: "bench", Subjects: []string{"dur.>"}, MaxAckPending: 4096}); err != nil {
			b.Fatal(err)
		}
		var got atomic.Int64
		done := make(chan struct{})
		props := actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(*topics.Message); ok {
				m.Ack()
				if got.Add(1) == int64(b.N) {
					close(done)
				}
			}
		})
		if _, err := e.t.Spawn(ctx, props, "dur.>", topics.SubscribeOptions{Group: "bench"}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		// Publishers in parallel, as actors publishing would be.
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := e.t.Publish(ctx, "dur.x", payload, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			b.Fatalf("delivered %d of %d", got.Load(), b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
