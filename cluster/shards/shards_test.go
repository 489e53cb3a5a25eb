package shards_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
	"github.com/troupe-dev/troupe/cluster/placement"
	"github.com/troupe-dev/troupe/cluster/shards"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLog stands for the replicated journal's fencing: the highest epoch
// fenced per shard wins, and the previous fencer learns that it was
// fenced (as its next write would tell it).
type fakeLog struct {
	mu       sync.Mutex
	epoch    map[int]uint64
	holder   map[int]string
	managers map[string]*shards.Manager
	drained  map[string]int
	served   map[string]map[int]bool // node → shards with a live subscription
}

func newFakeLog() *fakeLog {
	return &fakeLog{epoch: map[int]uint64{}, holder: map[int]string{}, managers: map[string]*shards.Manager{},
		drained: map[string]int{}, served: map[string]map[int]bool{}}
}

func (f *fakeLog) fence(node string) func(context.Context, int, uint64) error {
	return func(_ context.Context, s int, epoch uint64) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if epoch <= f.epoch[s] {
			return fmt.Errorf("shard %d: epoch %d is not above %d", s, epoch, f.epoch[s])
		}
		prev := f.holder[s]
		f.epoch[s], f.holder[s] = epoch, node
		if m := f.managers[prev]; prev != "" && prev != node && m != nil {
			m.Fenced(s)
		}
		return nil
	}
}

func (f *fakeLog) unfence(node string) func(int) {
	return func(s int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.holder[s] == node {
			f.holder[s] = ""
		}
	}
}

func (f *fakeLog) drain(node string) func(context.Context, int) error {
	return func(context.Context, int) error {
		f.mu.Lock()
		f.drained[node]++
		f.mu.Unlock()
		return nil
	}
}

func (f *fakeLog) serve(node string) func(int) (func(), error) {
	return func(s int) (func(), error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.served[node] == nil {
			f.served[node] = map[int]bool{}
		}
		f.served[node][s] = true
		return func() {
			f.mu.Lock()
			delete(f.served[node], s)
			f.mu.Unlock()
		}, nil
	}
}

// world is what the fake membership says, per observing node.
type world struct {
	mu    sync.Mutex
	views map[string]shards.View
}

func (w *world) set(node string, v shards.View) {
	w.mu.Lock()
	w.views[node] = v
	w.mu.Unlock()
}

func (w *world) view(node string) func() shards.View {
	return func() shards.View {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.views[node]
	}
}

const numShards = 24

type rig struct {
	t      *testing.T
	leases *lease.Store
	log    *fakeLog
	w      *world
	m      map[string]*shards.Manager
}

func newRig(t *testing.T) *rig {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := lease.Open(ctx, c.JetStream(0), lease.Config{
		TTL: 2 * time.Second, RenewEvery: 400 * time.Millisecond, Margin: 500 * time.Millisecond, MarkerTTL: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, leases: ls, log: newFakeLog(), w: &world{views: map[string]shards.View{}}, m: map[string]*shards.Manager{}}
}

func (r *rig) start(node string) *shards.Manager {
	r.t.Helper()
	m, err := shards.New(shards.Config{
		Self: node, Shards: numShards, Leases: r.leases, View: r.w.view(node),
		Fence: r.log.fence(node), Unfence: r.log.unfence(node), Drain: r.log.drain(node), Serve: r.log.serve(node),
		TakeoverDelay: 300 * time.Millisecond, Interval: 200 * time.Millisecond, Retry: 20 * time.Millisecond,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.log.mu.Lock()
	r.log.managers[node] = m
	r.log.mu.Unlock()
	r.m[node] = m
	m.Start()
	r.t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// settled waits until every shard is served by the node placement gives
// it among alive, and by no other manager.
func (r *rig) settled(alive []string, within time.Duration) {
	r.t.Helper()
	want := placement.Assign(numShards, alive)
	deadline := time.Now().Add(within)
	for {
		bad := ""
		for s := range numShards {
			var serving []string
			for id, m := range r.m {
				if _, local := m.Owner(s); local {
					serving = append(serving, id)
				}
			}
			slices.Sort(serving)
			if len(serving) != 1 || serving[0] != want[s] {
				bad = fmt.Sprintf("shard %d served by %v, want %s", s, serving, want[s])
				break
			}
			r.log.mu.Lock()
			ok := r.log.served[want[s]][s]
			r.log.mu.Unlock()
			if !ok {
				bad = fmt.Sprintf("shard %d: %s serves it but does not take forwarded commands", s, want[s])
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("not settled after %s: %s", within, bad)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShardsArePlacedAndServedOnce(t *testing.T) {
	r := newRig(t)
	all := []string{"n1", "n2", "n3"}
	for _, n := range all {
		r.w.set(n, shards.View{Alive: all, Majority: true})
		r.start(n)
	}
	r.settled(all, 10*time.Second)

	// Owner names the serving node everywhere, once settled.
	want := placement.Assign(numShards, all)
	for s := range numShards {
		for id, m := range r.m {
			owner, local := m.Owner(s)
			if owner != want[s] || local != (id == want[s]) {
				t.Fatalf("%s: Owner(%d) = %q, %v; want %q", id, s, owner, local, want[s])
			}
		}
	}
	// Epochs rise: each shard was fenced exactly under its lease's epoch.
	for _, in := range r.m["n1"].Shards() {
		if in.State == shards.Serving && in.Epoch == 0 {
			t.Fatalf("shard %d served with epoch 0", in.Shard)
		}
	}
}

func TestAJoiningNodeGetsItsShardsHandedOver(t *testing.T) {
	r := newRig(t)
	two := []string{"n1", "n2"}
	for _, n := range two {
		r.w.set(n, shards.View{Alive: two, Majority: true})
		r.start(n)
	}
	r.settled(two, 10*time.Second)
	three := []string{"n1", "n2", "n3"}
	r.w.set("n3", shards.View{Alive: three, Majority: true})
	r.start("n3")
	t0 := time.Now()
	for _, n := range two {
		r.w.set(n, shards.View{Alive: three, Majority: true})
		r.m[n].Trigger()
	}
	r.settled(three, 10*time.Second)
	t.Logf("handover to a joining node took %s", time.Since(t0))
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	if r.log.drained["n1"]+r.log.drained["n2"] == 0 {
		t.Fatal("shards moved without a drain")
	}
}

func TestADeadNodesShardsAreTakenOverAfterTheDelay(t *testing.T) {
	r := newRig(t)
	all := []string{"n1", "n2", "n3"}
	for _, n := range all {
		r.w.set(n, shards.View{Alive: all, Majority: true})
		r.start(n)
	}
	r.settled(all, 10*time.Second)
	var n3shards []int
	for s, o := range placement.Assign(numShards, all) {
		if o == "n3" {
			n3shards = append(n3shards, s)
		}
	}
	// n3 is cut off: it still believes it serves (its lease lives 2 s);
	// the others see it failed and take its shards over after the delay,
	// fencing it in the journal, without waiting for its lease to expire.
	r.w.set("n3", shards.View{Alive: all, Majority: true})
	two := []string{"n1", "n2"}
	t0 := time.Now()
	for _, n := range two {
		r.w.set(n, shards.View{Alive: two, Dead: []string{"n3"}, Majority: true})
		r.m[n].Trigger()
	}
	// Not before the takeover delay.
	time.Sleep(150 * time.Millisecond)
	for _, s := range n3shards {
		for _, n := range two {
			if _, local := r.m[n].Owner(s); local {
				t.Fatalf("%s serves n3's shard %d %s after n3 died: before the takeover delay", n, s, time.Since(t0))
			}
		}
	}
	// Well before n3's lease could expire (it renews; TTL 2 s).
	deadline := t0.Add(1500 * time.Millisecond)
	want := placement.Assign(numShards, two)
	for _, s := range n3shards {
		for {
			if _, local := r.m[want[s]].Owner(s); local {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n3's shard %d not taken over by %s", s, want[s])
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The fence tells n3 (on a goroutine of its own): it stops
		// serving the shard within moments, long before its lease ends.
		for fenced := time.Now(); ; time.Sleep(5 * time.Millisecond) {
			if _, local := r.m["n3"].Owner(s); !local {
				break
			}
			if time.Since(fenced) > 500*time.Millisecond {
				t.Fatalf("n3 still serves shard %d 500ms after being fenced", s)
			}
		}
	}
	t.Logf("takeover of %d shards took %s (delay 300ms; lease TTL 2s)", len(n3shards), time.Since(t0))
}

func TestANodeWithoutMajorityStopsServing(t *testing.T) {
	r := newRig(t)
	all := []string{"n1", "n2", "n3"}
	for _, n := range all {
		r.w.set(n, shards.View{Alive: all, Majority: true})
		r.start(n)
	}
	r.settled(all, 10*time.Second)
	r.w.set("n3", shards.View{Alive: []string{"n3"}, Dead: []string{"n1", "n2"}, Majority: false})
	r.m["n3"].Trigger()
	deadline := time.Now().Add(2 * time.Second)
	for {
		serving := 0
		for s := range numShards {
			if _, local := r.m["n3"].Owner(s); local {
				serving++
			}
		}
		if serving == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n3 still serves %d shards without a majority", serving)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// And it takes nothing while it has none.
	time.Sleep(300 * time.Millisecond)
	for s := range numShards {
		if _, local := r.m["n3"].Owner(s); local {
			t.Fatalf("n3 took shard %d without a majority", s)
		}
	}
}

func TestCloseHandsEveryShardBack(t *testing.T) {
	r := newRig(t)
	m := r.start("n1")
	r.w.set("n1", shards.View{Alive: []string{"n1"}, Majority: true})
	m.Trigger()
	r.settled([]string{"n1"}, 10*time.Second)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every lease is free: another node acquires each at once.
	for s := range numShards {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := r.leases.Acquire(ctx, shards.LeaseName(s), "n2")
		cancel()
		if err != nil {
			t.Fatalf("shard %d lease after Close: %v", s, err)
		}
		if err := r.leases.Release(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
}

// instances counts the singleton's running instances, checking that no
// two overlap and that epochs rise.
type instances struct {
	mu        sync.Mutex
	running   int
	maxAtOnce int
	epochs    []uint64
	by        []string
}

func (in *instances) singleton(node string) actors.Singleton {
	return actors.Singleton{Name: "monitor", Run: func(ctx context.Context, epoch uint64) error {
		in.mu.Lock()
		in.running++
		in.maxAtOnce = max(in.maxAtOnce, in.running)
		in.epochs = append(in.epochs, epoch)
		in.by = append(in.by, node)
		in.mu.Unlock()
		<-ctx.Done()
		in.mu.Lock()
		in.running--
		in.mu.Unlock()
		return ctx.Err()
	}}
}

func (in *instances) snapshot() (running, maxAtOnce int, epochs []uint64, by []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.running, in.maxAtOnce, slices.Clone(in.epochs), slices.Clone(in.by)
}

func TestASingletonRunsOnceAndMovesOnClose(t *testing.T) {
	r := newRig(t)
	all := []string{"n1", "n2", "n3"}
	in := &instances{}
	leaders := map[string]*shards.Leaders{}
	for _, n := range all {
		r.w.set(n, shards.View{Alive: all, Majority: true})
		l, err := shards.NewLeaders(shards.LeadersConfig{Self: n, Leases: r.leases, View: r.w.view(n), TakeoverDelay: 300 * time.Millisecond, Retry: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		leaders[n] = l
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		l.Lead(in.singleton(n))
	}
	waitRunning := func(what string, after int) time.Duration {
		t.Helper()
		t0 := time.Now()
		for {
			running, _, epochs, _ := in.snapshot()
			if running == 1 && len(epochs) > after {
				return time.Since(t0)
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("%s: %d instances running after %d starts", what, running, len(epochs))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitRunning("first election", 0)
	for round := 0; round < 3; round++ {
		_, _, _, by := in.snapshot()
		leader := by[len(by)-1]
		// Every node names the leader.
		time.Sleep(100 * time.Millisecond)
		for n, l := range leaders {
			if l == nil {
				continue // closed in an earlier round
			}
			info := l.Leaders()
			if len(info) != 1 || info[0].Leader != leader || info[0].Leading != (n == leader) {
				t.Fatalf("round %d: %s sees %+v; leader is %s", round, n, info, leader)
			}
		}
		// A graceful stop hands the singleton over within 0.5 s.
		t0 := time.Now()
		if err := leaders[leader].Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		leaders[leader] = nil
		_, _, epochs, _ := in.snapshot()
		waitRunning("handover", len(epochs))
		took := time.Since(t0)
		if took > 500*time.Millisecond {
			t.Fatalf("handover took %s, want at most 0.5 s", took)
		}
		t.Logf("round %d: handover from %s took %s", round, leader, took)
		if round == 1 {
			break // one node left
		}
	}
	_, maxAtOnce, epochs, _ := in.snapshot()
	if maxAtOnce != 1 {
		t.Fatalf("%d instances ran at once", maxAtOnce)
	}
	for i := 1; i < len(epochs); i++ {
		if epochs[i] <= epochs[i-1] {
			t.Fatalf("epochs do not rise: %v", epochs)
		}
	}
}

func TestASingletonLeavesANodeWithoutMajority(t *testing.T) {
	r := newRig(t)
	all := []string{"n1", "n2", "n3"}
	in := &instances{}
	for _, n := range all {
		r.w.set(n, shards.View{Alive: all, Majority: true})
		l, err := shards.NewLeaders(shards.LeadersConfig{Self: n, Leases: r.leases, View: r.w.view(n), TakeoverDelay: 300 * time.Millisecond, Retry: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		l.Lead(in.singleton(n))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if running, _, _, _ := in.snapshot(); running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, _, _, by := in.snapshot()
	leader := by[0]
	// The leader is cut off: it sees no majority, the others see it dead.
	var rest []string
	for _, n := range all {
		if n != leader {
			rest = append(rest, n)
		}
	}
	r.w.set(leader, shards.View{Alive: []string{leader}, Dead: rest, Majority: false})
	for _, n := range rest {
		r.w.set(n, shards.View{Alive: rest, Dead: []string{leader}, Majority: true})
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, _, epochs, by := in.snapshot()
		if len(epochs) >= 2 && by[len(by)-1] != leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not taken over: starts by %v", by)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, maxAtOnce, _, _ := in.snapshot(); maxAtOnce != 1 {
		t.Fatalf("%d instances ran at once: the cut-off leader did not stop first", maxAtOnce)
	}
}

func TestCheckpointsAreFencedByEpoch(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := shards.OpenCheckpoints(ctx, c.JetStream(0), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := shards.OpenCheckpoints(ctx, c.JetStream(0), 1)
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := a.Load(ctx, "transfer process", 3); err != nil || pos != 0 {
		t.Fatalf("fresh checkpoint %d, %v; want 0", pos, err)
	}
	for _, pos := range []uint64{5, 9, 12} {
		if err := a.Save(ctx, "transfer process", 3, pos, 7); err != nil {
			t.Fatal(err)
		}
	}
	// A new owner (epoch 8) continues from it; the old one is fenced.
	if pos, err := b.Load(ctx, "transfer process", 3); err != nil || pos != 12 {
		t.Fatalf("checkpoint %d, %v; want 12", pos, err)
	}
	if err := b.Save(ctx, "transfer process", 3, 15, 8); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(ctx, "transfer process", 3, 13, 7); !errors.Is(err, actors.ErrFencedCheckpoint) {
		t.Fatalf("save under an older epoch: %v, want ErrFencedCheckpoint", err)
	}
	if pos, _ := a.Load(ctx, "transfer process", 3); pos != 15 {
		t.Fatalf("checkpoint %d after the fenced save, want 15", pos)
	}
	// Other partitions and projections are separate keys.
	if pos, _ := a.Load(ctx, "transfer process", 4); pos != 0 {
		t.Fatalf("partition 4 at %d, want 0", pos)
	}
}
