package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newGate() *sendGate { return &sendGate{idle: make(chan struct{})} }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSendGate(t *testing.T) {
	g := newGate()
	if !g.enter() || !g.enter() {
		t.Fatal("an open gate refused a send")
	}
	idle := g.close()
	if g.enter() {
		t.Fatal("a closed gate admitted a send")
	}
	if isClosed(idle) {
		t.Fatal("idle with two sends in flight")
	}
	g.leave()
	if isClosed(idle) {
		t.Fatal("idle with one send in flight")
	}
	g.leave()
	if !isClosed(idle) {
		t.Fatal("not idle once the last send left")
	}
	if again := g.close(); !isClosed(again) {
		t.Fatal("a second close is not idle")
	}

	g = newGate()
	if !isClosed(g.close()) {
		t.Fatal("closing a gate with nothing in flight is not idle at once")
	}
}

// TestSendGateRace: senders enter and leave while the gate closes. Once
// idle, no send is in flight and none is admitted.
func TestSendGateRace(t *testing.T) {
	for range 20 {
		g := newGate()
		var inside, admitted, left atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if !g.enter() {
						continue
					}
					admitted.Add(1)
					inside.Add(1)
					inside.Add(-1)
					left.Add(1)
					g.leave()
				}
			}()
		}
		time.Sleep(time.Millisecond)
		<-g.close()
		if n := inside.Load(); n != 0 {
			t.Fatalf("idle with %d sends inside", n)
		}
		before := admitted.Load()
		time.Sleep(time.Millisecond)
		close(stop)
		wg.Wait()
		if admitted.Load() != before || admitted.Load() != left.Load() {
			t.Fatalf("admitted %d before idle, %d after; %d left", before, admitted.Load(), left.Load())
		}
	}
}
