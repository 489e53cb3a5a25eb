package membership

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

// Three members form; each sees the three alive with the others' tags, and
// a tag change reaches the others.
func TestFormAndTags(t *testing.T) {
	leakCheck(t)
	ids := []string{"a", "b", "c"}
	nodes := formCluster(t, ids, nil)

	for _, n := range nodes {
		ms := n.Members()
		if len(ms) != 3 {
			t.Fatalf("%s sees %d members: %+v", n.cfg.NodeID, len(ms), ms)
		}
		for i, m := range ms {
			if m.ID != ids[i] {
				t.Errorf("%s: member %d is %q, want %q (sorted by id)", n.cfg.NodeID, i, m.ID, ids[i])
			}
			if m.State != Alive {
				t.Errorf("%s sees %s %s, want alive", n.cfg.NodeID, m.ID, m.State)
			}
			if m.Tags["name"] != m.ID {
				t.Errorf("%s sees %s with tags %v", n.cfg.NodeID, m.ID, m.Tags)
			}
			if m.Addr != nodes[i].Addr() {
				t.Errorf("%s sees %s at %s, want %s", n.cfg.NodeID, m.ID, m.Addr, nodes[i].Addr())
			}
		}
		if l := n.Local(); l.ID != n.cfg.NodeID || l.State != Alive || l.Addr != n.Addr() {
			t.Errorf("Local of %s: %+v", n.cfg.NodeID, l)
		}
		// The join event that sets LastHeard is handled just after serf
		// lists the member.
		eventually(t, 2*time.Second, n.cfg.NodeID+" has heard from every member", func() bool {
			for _, m := range n.Members() {
				if m.LastHeard.IsZero() || time.Since(m.LastHeard) > 10*time.Second {
					return false
				}
			}
			return true
		})
	}

	// Members returns copies.
	nodes[0].Members()[1].Tags["name"] = "changed"
	if m, _ := memberOf(nodes[0], "b"); m.Tags["name"] != "b" {
		t.Fatalf("changing a returned tag map changed the member: %v", m.Tags)
	}

	before := nodes[0].changes.Load()
	newTags := map[string]string{"name": "b", "api": "http://127.0.0.1:8081", "roles": "api,worker"}
	if err := nodes[1].SetTags(newTags); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.cfg.NodeID+" sees b's new tags", func() bool {
			m, ok := memberOf(n, "b")
			return ok && maps.Equal(m.Tags, newTags)
		})
	}
	eventually(t, 5*time.Second, "OnChange after the tag change", func() bool {
		return nodes[0].changes.Load() > before
	})
	if got := nodes[1].Local().Tags; !maps.Equal(got, newTags) {
		t.Errorf("Local tags of b: %v", got)
	}
}

// Close without leave: the others see the member suspect, then failed,
// within 2 s with the tuned timers.
func TestFailureDetected(t *testing.T) {
	leakCheck(t)
	nodes := formCluster(t, []string{"a", "b", "c"}, nil)
	survivors := nodes[:2]

	type seen struct {
		suspect  bool
		failedAt time.Duration
	}
	var mu sync.Mutex
	views := make(map[string]*seen)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for _, n := range survivors {
		v := &seen{}
		views[n.cfg.NodeID] = v
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.After(10 * time.Second)
			for {
				if m, ok := memberOf(n, "c"); ok {
					mu.Lock()
					switch m.State {
					case Suspect:
						v.suspect = true
					case Failed:
						v.failedAt = time.Since(start)
					}
					done := v.failedAt > 0
					mu.Unlock()
					if done {
						return
					}
				}
				select {
				case <-stop:
					return
				case <-deadline:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	lastHeard, _ := memberOf(nodes[0], "c")
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(stop)

	anySuspect := false
	for _, n := range survivors {
		v := views[n.cfg.NodeID]
		t.Logf("%s: c failed after %v (suspect seen first: %v)", n.cfg.NodeID, v.failedAt, v.suspect)
		if v.failedAt == 0 {
			t.Fatalf("%s never saw c failed within 10 s", n.cfg.NodeID)
		}
		if v.failedAt > 2*time.Second {
			t.Errorf("%s saw c failed after %v, want <= 2s", n.cfg.NodeID, v.failedAt)
		}
		anySuspect = anySuspect || v.suspect
	}
	if !anySuspect {
		t.Errorf("no survivor saw c suspect before failed")
	}
	// LastHeard does not move once the member is gone.
	m, _ := memberOf(nodes[0], "c")
	if m.LastHeard.After(start.Add(time.Second)) || m.LastHeard.Before(lastHeard.LastHeard) {
		t.Errorf("LastHeard of failed c: %v (closed at %v, before: %v)", m.LastHeard, start, lastHeard.LastHeard)
	}
}

// Leave: the others see the member left within 1 s, and never failed.
func TestLeaveSeenAsLeft(t *testing.T) {
	leakCheck(t)
	nodes := formCluster(t, []string{"a", "b", "c"}, nil)
	leaver := nodes[2]

	var mu sync.Mutex
	statesSeen := make(map[State]bool)
	leftAfter := make(map[string]time.Duration)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for _, n := range nodes[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if m, ok := memberOf(n, "c"); ok {
					mu.Lock()
					statesSeen[m.State] = true
					if m.State == Left && leftAfter[n.cfg.NodeID] == 0 {
						leftAfter[n.cfg.NodeID] = time.Since(start)
					}
					mu.Unlock()
				}
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := leaver.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	leaveTook := time.Since(start)
	if err := leaver.Leave(ctx); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	if l := leaver.Local(); l.State != Left {
		t.Errorf("leaver sees itself %s", l.State)
	}
	if _, err := leaver.Join(ctx, []string{nodes[0].Addr()}, 1); !errors.Is(err, ErrLeft) {
		t.Errorf("Join after Leave: %v, want ErrLeft", err)
	}
	if err := leaver.Close(); err != nil {
		t.Fatal(err)
	}
	// Keep watching for a while after the close: the member must stay left.
	for _, n := range nodes[:2] {
		waitState(t, n, "c", 3*time.Second, Left)
	}
	time.Sleep(time.Second) // observation window (the watchers poll meanwhile)
	close(stop)
	wg.Wait()

	t.Logf("Leave returned after %v; left seen after %v; states seen: %v", leaveTook, leftAfter, statesSeen)
	for _, n := range nodes[:2] {
		d := leftAfter[n.cfg.NodeID]
		if d == 0 || d > time.Second {
			t.Errorf("%s saw c left after %v, want within 1 s", n.cfg.NodeID, d)
		}
	}
	if statesSeen[Failed] || statesSeen[Suspect] {
		t.Errorf("a leaving member was seen %v", statesSeen)
	}
}

// A node comes back under its id after a failure or a leave, at the same
// or at another address, and replaces its old entry.
func TestRestart(t *testing.T) {
	tests := []struct {
		name     string
		leave    bool // leave gracefully (else: fail)
		sameAddr bool
	}{
		{"after failure, same address", false, true},
		{"after leave, same address", true, true},
		{"after failure, new address", false, false},
		{"after leave, new address", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			nodes := formCluster(t, []string{"a", "b", "c"}, nil)
			old := nodes[2]
			oldAddr := old.Addr()
			want := Failed
			if tt.leave {
				want = Left
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := old.Leave(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes[:2] {
				waitState(t, n, "c", 5*time.Second, want)
			}

			cfg := Config{NodeID: "c", Tags: map[string]string{"name": "c", "incarnation": "2"}}
			if tt.sameAddr {
				cfg.BindAddr = oldAddr
			}
			back := startNode(t, cfg)
			if tt.sameAddr != (back.Addr() == oldAddr) {
				t.Fatalf("restarted at %s, old address %s", back.Addr(), oldAddr)
			}
			start := time.Now()
			joinOK(t, back, nodes[0].Addr())
			for _, n := range append(nodes[:2], back) {
				m := waitState(t, n, "c", 5*time.Second, Alive)
				if m.Addr != back.Addr() || m.Tags["incarnation"] != "2" {
					t.Errorf("%s sees c at %s with %v, want %s and the new tags", n.cfg.NodeID, m.Addr, m.Tags, back.Addr())
				}
				if c := countID(n, "c"); c != 1 {
					t.Errorf("%s has %d entries for c", n.cfg.NodeID, c)
				}
				if len(n.Members()) != 3 {
					t.Errorf("%s sees %+v", n.cfg.NodeID, n.Members())
				}
			}
			t.Logf("c alive again everywhere %v after its Join started", time.Since(start))
		})
	}
}

// A second node claiming a live member's id is refused with a
// *ConflictError naming the id and the existing member's address; the
// existing members are unaffected. Two-member clusters are the case where
// serf's own conflict vote would shut both claimants down.
func TestIDConflictRefused(t *testing.T) {
	tests := []struct {
		name   string
		id     string // the contested id
		viaIdx int    // the seed the newcomer joins through
	}{
		{"through another member", "b", 0},
		{"through the holder itself", "b", 1},
		{"id of the seed", "a", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			nodes := formCluster(t, []string{"a", "b"}, nil)
			holder := nodes[0]
			if tt.id == "b" {
				holder = nodes[1]
			}
			dup := startNode(t, Config{NodeID: tt.id})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n, err := dup.Join(ctx, []string{nodes[tt.viaIdx].Addr()}, 3)
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("Join = %d, %v; want a *ConflictError", n, err)
			}
			if ce.ID != tt.id || ce.OtherAddr != holder.Addr() || ce.OtherState != Alive || ce.Addr != dup.Addr() {
				t.Errorf("conflict %+v; want id %s held by %s", ce, tt.id, holder.Addr())
			}
			msg := err.Error()
			if !strings.Contains(msg, `"`+tt.id+`"`) || !strings.Contains(msg, holder.Addr()) || !strings.Contains(msg, "unique") {
				t.Errorf("message does not name the id and the holder: %s", msg)
			}
			t.Logf("error: %v", err)

			// The existing members stay as they were, for a few probe rounds.
			deadline := time.Now().Add(1500 * time.Millisecond)
			for time.Now().Before(deadline) {
				for _, nd := range nodes {
					ms := nd.Members()
					if len(ms) != 2 || ms[0].State != Alive || ms[1].State != Alive ||
						ms[0].Addr != nodes[0].Addr() || ms[1].Addr != nodes[1].Addr() {
						t.Fatalf("%s sees %+v after the refused join", nd.cfg.NodeID, ms)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			if l := holder.Local(); l.State != Alive {
				t.Errorf("holder is %s", l.State)
			}
			if ms := dup.Members(); len(ms) != 1 {
				t.Errorf("the refused node sees %+v", ms)
			}
		})
	}
}

// A node with another gossip key, or none, cannot join; the error says so.
func TestKeyMismatch(t *testing.T) {
	k1 := []byte("0123456789abcdef0123456789abcdef")
	k2 := []byte("fedcba9876543210fedcba9876543210")
	tests := []struct {
		name              string
		clusterKey, myKey []byte
		wantMismatch      bool
	}{
		{"same key", k1, k1, false},
		{"other key", k1, k2, true},
		{"no key against a keyed cluster", k1, nil, true},
		{"key against a plain cluster", nil, k1, true},
		{"16-byte key against a 32-byte key", k1, k1[:16], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			nodes := formCluster(t, []string{"a", "b"}, func(c *Config) { c.Key = tt.clusterKey })
			n := startNode(t, Config{NodeID: "n", Key: tt.myKey})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := n.Join(ctx, []string{nodes[0].Addr()}, 3)
			if !tt.wantMismatch {
				if err != nil {
					t.Fatal(err)
				}
				waitState(t, nodes[1], "n", 5*time.Second, Alive)
				return
			}
			var km *KeyMismatchError
			if !errors.As(err, &km) {
				t.Fatalf("Join: %v; want *KeyMismatchError", err)
			}
			if !strings.Contains(err.Error(), "encryption key") || km.Seed != nodes[0].Addr() {
				t.Errorf("error: %v", err)
			}
			t.Logf("error: %v", err)
			time.Sleep(500 * time.Millisecond) // let any stray gossip land before we look
			for _, nd := range nodes {
				if ms := nd.Members(); len(ms) != 2 {
					t.Errorf("%s sees %+v", nd.cfg.NodeID, ms)
				}
			}
			if ms := n.Members(); len(ms) != 1 {
				t.Errorf("the refused node sees %+v", ms)
			}
		})
	}
}

// Join retries unreachable seeds a bounded number of times, joins through
// the one seed that answers, and stops when its context ends.
func TestJoinRetries(t *testing.T) {
	leakCheck(t)
	seed := startNode(t, Config{NodeID: "seed"})
	u1, u2 := freeAddr(t), freeAddr(t)

	t.Run("unreachable seeds", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n1"})
		start := time.Now()
		joined, err := n.Join(context.Background(), []string{u1, u2}, 3)
		took := time.Since(start)
		var je *JoinError
		if !errors.As(err, &je) || joined != 0 {
			t.Fatalf("Join = %d, %v; want a *JoinError", joined, err)
		}
		if je.Attempts != 3 || !strings.Contains(err.Error(), u1) || !strings.Contains(err.Error(), u2) {
			t.Errorf("error does not name the seeds and 3 attempts: %v", err)
		}
		// Two back-offs: 100 ms and 200 ms, each +-20%.
		if took < 240*time.Millisecond || took > 5*time.Second {
			t.Errorf("three attempts took %v", took)
		}
		if got := strings.Count(n.logs.String(), "gossip join attempt failed"); got != 6 {
			t.Errorf("logged %d failed attempts, want 6 (3 rounds x 2 seeds)", got)
		}
		t.Logf("after %v: %v", took, err)
	})

	t.Run("one reachable seed among unreachable ones", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n2"})
		joined, err := n.Join(context.Background(), []string{u1, seed.Addr(), u2}, 3)
		if err != nil || joined != 1 {
			t.Fatalf("Join = %d, %v; want 1, nil", joined, err)
		}
		waitState(t, seed, "n2", 5*time.Second, Alive)
	})

	t.Run("context ends the retries", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n3"})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := n.Join(ctx, []string{u1}, 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Join: %v; want it to wrap context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Join returned %v after its context ended", took-300*time.Millisecond)
		}
	})

	t.Run("own address only", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n4"})
		joined, err := n.Join(context.Background(), []string{n.Addr(), " "}, 3)
		if err != nil || joined != 0 {
			t.Fatalf("Join with only itself = %d, %v; want 0, nil", joined, err)
		}
	})

	t.Run("malformed seed", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n5"})
		if _, err := n.Join(context.Background(), []string{"127.0.0.1"}, 1); err == nil {
			t.Fatal("Join accepted a seed without a port")
		}
	})

	t.Run("Close ends a Join", func(t *testing.T) {
		n := startNode(t, Config{NodeID: "n6"})
		done := make(chan error, 1)
		go func() {
			_, err := n.Join(context.Background(), []string{u1}, 0)
			done <- err
		}()
		time.Sleep(150 * time.Millisecond) // let it fail once and back off
		closeStart := time.Now()
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Close took %v", time.Since(closeStart))
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Join after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Join did not return after Close")
		}
	})
}

// A failed (or left) member disappears from Members after ReapFailedAfter
// (ReapLeftAfter).
func TestReap(t *testing.T) {
	for _, leave := range []bool{false, true} {
		name := map[bool]string{false: "failed", true: "left"}[leave]
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			const after = 2 * time.Second
			nodes := formCluster(t, []string{"a", "b", "c"}, func(c *Config) {
				c.ReapFailedAfter = after
				c.ReapLeftAfter = after
				c.Timers.ReapInterval = 200 * time.Millisecond
			})
			want := map[bool]State{false: Failed, true: Left}[leave]
			var marked time.Time
			if leave {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				errc := make(chan error, 1)
				go func() { errc <- nodes[2].Leave(ctx) }()
				waitState(t, nodes[0], "c", 5*time.Second, want)
				marked = time.Now()
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if err := nodes[2].Close(); err != nil {
				t.Fatal(err)
			}
			if !leave {
				waitState(t, nodes[0], "c", 5*time.Second, want)
				marked = time.Now()
			}
			eventually(t, 10*time.Second, "c reaped from a's and b's lists", func() bool {
				return countID(nodes[0], "c") == 0 && countID(nodes[1], "c") == 0
			})
			took := time.Since(marked)
			t.Logf("c reaped %v after it was seen %s", took, want)
			if took < after-300*time.Millisecond {
				t.Errorf("reaped after %v, before ReapFailedAfter/ReapLeftAfter (%v)", took, after)
			}
			if ms := nodes[0].Members(); len(ms) != 2 {
				t.Errorf("a sees %+v", ms)
			}
		})
	}
}

// The lifecycle: errors before Start and after Close, Close idempotent.
func TestLifecycle(t *testing.T) {
	leakCheck(t)
	n, err := newNode(t, Config{NodeID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := n.Join(ctx, []string{"127.0.0.1:1"}, 1); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Join before Start: %v", err)
	}
	if err := n.Leave(ctx); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Leave before Start: %v", err)
	}
	if n.Members() != nil || n.Local().State != Unknown || n.Addr() != "127.0.0.1:0" {
		t.Errorf("before Start: %v %+v %s", n.Members(), n.Local(), n.Addr())
	}
	if err := n.SetTags(map[string]string{"v": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Local().Tags["v"] != "2" {
		t.Errorf("tags set before Start were not used: %v", n.Local().Tags)
	}
	if err := n.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	if strings.HasSuffix(n.Addr(), ":0") {
		t.Errorf("Addr after Start: %s", n.Addr())
	}
	for i := 0; i < 2; i++ {
		if err := n.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := n.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if _, err := n.Join(ctx, []string{"127.0.0.1:1"}, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close: %v", err)
	}
	if err := n.SetTags(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetTags after Close: %v", err)
	}
	if err := n.Leave(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Close: %v", err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
	if ms := n.Members(); len(ms) != 1 || ms[0].ID != "x" {
		t.Errorf("Members after Close: %+v", ms)
	}

	// Close while never started.
	m, err := New(Config{NodeID: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// Shutdown leaves, then closes: the others see Left.
func TestShutdown(t *testing.T) {
	leakCheck(t)
	nodes := formCluster(t, []string{"a", "b"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, nodes[0], "b", 3*time.Second, Left)
}

// serf and memberlist log through slog (component=serf), never to stderr.
func TestLogsGoToSlog(t *testing.T) {
	leakCheck(t)
	var nodes []*testNode
	withStderrCaptured(t, func() {
		nodes = formCluster(t, []string{"a", "b"}, nil)
		if err := nodes[1].Close(); err != nil {
			t.Fatal(err)
		}
		waitState(t, nodes[0], "b", 5*time.Second, Failed)
		if err := nodes[0].Close(); err != nil {
			t.Fatal(err)
		}
	})
	logs := nodes[0].logs.String()
	for _, want := range []string{
		`level=INFO msg="serf: EventMemberJoin: b 127.0.0.1" node=a component=serf`,
		`level=INFO msg="serf: EventMemberFailed: b 127.0.0.1" node=a component=serf`,
		`level=DEBUG msg="memberlist: Stream connection`,
		`level=WARN msg="serf: Shutdown without a Leave" node=a component=serf`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if strings.Contains(logs, "[INFO]") || strings.Contains(logs, "[WARN]") || strings.Contains(logs, "[DEBUG]") {
		t.Errorf("level prefixes were not parsed:\n%s", logs)
	}
}
