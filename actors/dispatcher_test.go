package actors

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestReusingDispatcherRunsEveryTurnAndStops(t *testing.T) {
	d := newReusingDispatcher(300)
	var ran atomic.Int64
	var wg sync.WaitGroup
	const n = 10000
	wg.Add(n)
	for range n {
		d.Schedule(func() { ran.Add(1); wg.Done() })
	}
	wg.Wait()
	if ran.Load() != n {
		t.Fatalf("ran %d of %d", ran.Load(), n)
	}
	if len(d.idle) == 0 || len(d.idle) > maxIdleWorkers {
		t.Fatalf("%d idle workers parked, want 1..%d", len(d.idle), maxIdleWorkers)
	}
	d.stop()
	d.stop() // idempotent
	if len(d.idle) != 0 {
		t.Fatalf("%d idle workers after stop", len(d.idle))
	}
	done := make(chan struct{})
	d.Schedule(func() { close(done) }) // a late turn still runs
	<-done
}
