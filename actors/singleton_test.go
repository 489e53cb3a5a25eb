package actors_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
)

func TestSingletonDeclaredTwiceIsRefused(t *testing.T) {
	run := func(ctx context.Context, _ uint64) error { <-ctx.Done(); return nil }
	for _, tc := range []struct {
		name string
		s    []actors.Singleton
		want string
	}{
		{"twice", []actors.Singleton{{Name: "m", Run: run}, {Name: "m", Run: run}}, `singleton "m" declared twice`},
		{"bad name", []actors.Singleton{{Name: "a b", Run: run}}, `singleton name "a b"`},
		{"no run", []actors.Singleton{{Name: "m"}}, `singleton "m" has no Run`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			start(t, t.TempDir(), nil, func(rt *actors.Runtime) error {
				for _, s := range tc.s {
					if err = rt.RegisterSingleton(s); err != nil {
						return nil
					}
				}
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// On a single node (no Leader) a singleton runs from Start, with epoch 0,
// is restarted after it fails, and is stopped by Close.
func TestSingletonRunsOnASingleNode(t *testing.T) {
	var starts, running atomic.Int32
	n := start(t, t.TempDir(), nil, func(rt *actors.Runtime) error {
		return rt.RegisterSingleton(actors.Singleton{Name: "tick", Run: func(ctx context.Context, epoch uint64) error {
			if epoch != 0 {
				t.Errorf("epoch %d on a single node", epoch)
			}
			if starts.Add(1) == 1 {
				return context.DeadlineExceeded // fail once: it is started again
			}
			running.Add(1)
			defer running.Add(-1)
			<-ctx.Done()
			return nil
		}})
	})
	actorstest.Eventually(t, 5*time.Second, func() bool { return running.Load() == 1 })
	if s := starts.Load(); s != 2 {
		t.Fatalf("started %d times, want 2 (once more after its failure)", s)
	}
	n.Close()
	if running.Load() != 0 {
		t.Fatal("the singleton still runs after Close")
	}
}
