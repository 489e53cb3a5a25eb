package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors/examples/bank"
	"github.com/troupe-dev/troupe/journal/badgerstore"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// benchCommands runs b.N Deposit commands through a real node's one
// command path (sendCommand: the node's span, the sidecar chain, the
// entity, the journal with sync none, the events publisher and the bank's
// projections) from 64 goroutines, each on its own account, and reports
// commands per second. Sync none keeps fsync out of the figure, so that
// what the node itself costs (tracing included) is what changes.
// configure may change the node's config (tracing on).
func benchCommands(b *testing.B, pluginDir string, configure func(*Config)) {
	cfg := Config{
		DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1, Setup: bank.Register,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Sync: badgerstore.SyncNone, PluginDir: pluginDir,
	}
	if configure != nil {
		configure(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	const workers = 64
	send := func(id, typ string, payload map[string]any) error {
		st, _ := structpb.NewStruct(payload)
		cmd, err := newCommand(&troupev1.SendRequest{Kind: "account", Id: id, Type: typ, Payload: st}, nil)
		if err != nil {
			return err
		}
		_, err = n.sendCommand(ctx, cmd)
		return err
	}
	for w := range workers {
		if err := send(fmt.Sprint("bench-", w), "Open", nil); err != nil {
			b.Fatal(err)
		}
	}
	deposit := map[string]any{"amount": 1}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		k := b.N / workers
		if w < b.N%workers {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("bench-", w)
			for range k {
				if err := send(id, "Deposit", deposit); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cmds/s")
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkCommandPath is the command path with tracing off (no tracer
// provider, no OTEL_* variables): the figure the tracing overhead is
// measured against (docs/benchmarks.md, "Tracing overhead"). Set
// TROUPE_BENCH_PLUGINS to a plugin directory to run the sidecar chain too.
func BenchmarkCommandPath(b *testing.B) {
	b.Run("tracing=off", func(b *testing.B) { benchCommands(b, benchPlugins(b), nil) })
}

// benchPlugins is the plugin directory of the command benchmarks:
// TROUPE_BENCH_PLUGINS, or none.
func benchPlugins(*testing.B) string { return os.Getenv("TROUPE_BENCH_PLUGINS") }
