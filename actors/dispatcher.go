package actors

import "sync"

// reusingDispatcher runs protoactor mailbox turns on goroutines it keeps
// and reuses, instead of a fresh goroutine per turn (protoactor's default).
// An entity's turn decodes JSON, runs the handler and waits for the
// journal; a fresh goroutine grows its stack through that every time,
// which cost about 15% of the CPU of a command. Parked goroutines keep
// their grown stacks. At most maxIdle wait for work; beyond that a worker
// that finishes exits, so bursts do not leave goroutines behind.
//
// Goroutines: workers run until the dispatcher is stopped (stop wakes the
// idle ones; busy ones exit after their turn).
type reusingDispatcher struct {
	throughput int
	idle       chan chan func()
	mu         sync.Mutex
	stopped    bool
	wg         sync.WaitGroup
}

const maxIdleWorkers = 256

func newReusingDispatcher(throughput int) *reusingDispatcher {
	return &reusingDispatcher{throughput: throughput, idle: make(chan chan func(), maxIdleWorkers)}
}

func (d *reusingDispatcher) Throughput() int { return d.throughput }

func (d *reusingDispatcher) Schedule(fn func()) {
	select {
	case w := <-d.idle:
		w <- fn
		return
	default:
	}
	d.mu.Lock()
	stopped := d.stopped
	if !stopped {
		d.wg.Add(1)
	}
	d.mu.Unlock()
	if stopped {
		go fn() // late turns after stop still run, on a plain goroutine
		return
	}
	go d.work(fn)
}

func (d *reusingDispatcher) work(fn func()) {
	defer d.wg.Done()
	ch := make(chan func())
	for fn != nil {
		fn()
		// Park under mu, so that stop (which drains under mu) never misses
		// a worker parking.
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		select {
		case d.idle <- ch:
		default:
			d.mu.Unlock()
			return // enough idle workers already
		}
		d.mu.Unlock()
		fn = <-ch // nil once stop closed ch
	}
}

// stop ends the idle workers and waits for the busy ones to finish their
// turn. It is idempotent.
func (d *reusingDispatcher) stop() {
	d.mu.Lock()
	d.stopped = true
	for {
		select {
		case w := <-d.idle:
			close(w)
			continue
		default:
		}
		break
	}
	d.mu.Unlock()
	d.wg.Wait()
}
