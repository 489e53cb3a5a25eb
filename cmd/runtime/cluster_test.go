package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/troupe-dev/troupe/cluster/clustertest"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// The cluster tests run real `troupe dev` processes through the harness in
// cluster/clustertest. Make test runs a few cycles of each; TROUPE_LONG=1
// runs the long versions (docs/testing.md).

// multiProcess skips a test of real node processes under -short (make
// test-race): the children are not built with the race detector, so the
// race pass would only repeat what make test ran.
func multiProcess(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process cluster test: runs in make test; under -short (the race pass) its child processes would not be race-checked")
	}
}

func startCluster(t *testing.T, opts clustertest.Options) *clustertest.Cluster {
	t.Helper()
	multiProcess(t)
	opts.Binary = troupeBin
	t0 := time.Now()
	c := clustertest.Start(t, opts)
	waitMembers(t, c, allRunning(c), 30*time.Second)
	t.Logf("%d nodes formed a cluster in %s", len(c.Nodes()), time.Since(t0).Round(time.Millisecond))
	return c
}

func allRunning(c *clustertest.Cluster) []int {
	var out []int
	for i, n := range c.Nodes() {
		if n.Running() {
			out = append(out, i)
		}
	}
	return out
}

// members asks node i for its member list, by id.
func members(ctx context.Context, c *clustertest.Cluster, i int) (map[string]*troupev1.Member, error) {
	cl := troupev1connect.NewClusterServiceClient(c.HTTPClient(), c.Node(i).HTTPURL())
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cl.Members(ctx, connect.NewRequest(&troupev1.MembersRequest{}))
	if err != nil {
		return nil, err
	}
	out := map[string]*troupev1.Member{}
	for _, m := range resp.Msg.GetMembers() {
		if _, dup := out[m.GetId()]; dup {
			return nil, fmt.Errorf("node %s lists member %s twice", c.Node(i).ID, m.GetId())
		}
		out[m.GetId()] = m
	}
	return out, nil
}

func status(ctx context.Context, c *clustertest.Cluster, i int) (*troupev1.ClusterServiceStatusResponse, error) {
	cl := troupev1connect.NewClusterServiceClient(c.HTTPClient(), c.Node(i).HTTPURL())
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cl.Status(ctx, connect.NewRequest(&troupev1.ClusterServiceStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// waitMembers waits until every node in nodes sees exactly those nodes
// alive and ready, with one JetStream meta leader that they agree on.
func waitMembers(t *testing.T, c *clustertest.Cluster, nodes []int, bound time.Duration) string {
	t.Helper()
	want := make([]string, 0, len(nodes))
	for _, i := range nodes {
		want = append(want, c.Node(i).ID)
	}
	sort.Strings(want)
	var leader string
	clustertest.Eventually(t, bound, fmt.Sprintf("nodes %v see each other alive with one meta leader", want), func() error {
		leaders := map[string]bool{}
		for _, i := range nodes {
			ms, err := members(context.Background(), c, i)
			if err != nil {
				return err
			}
			var alive []string
			for id, m := range ms {
				if m.GetState() == "alive" {
					alive = append(alive, id)
				}
			}
			sort.Strings(alive)
			if !slices.Equal(alive, want) {
				return fmt.Errorf("%s sees %v alive", c.Node(i).ID, alive)
			}
			st, err := status(context.Background(), c, i)
			if err != nil {
				return err
			}
			if !st.GetReady() {
				return fmt.Errorf("%s not ready: %s", c.Node(i).ID, st.GetReason())
			}
			// A node without the jetstream role runs NATS without
			// JetStream: it has no view of the meta group of its own.
			if !slices.Contains(ms[c.Node(i).ID].GetRoles(), "jetstream") {
				continue
			}
			leaders[st.GetMetaLeader()] = true
			leader = st.GetMetaLeader()
		}
		if len(leaders) != 1 || leader == "" {
			return fmt.Errorf("meta leaders %v", leaders)
		}
		return nil
	})
	return leader
}

// waitState waits until every observer sees member id in state, and
// returns how long that took from since.
func waitState(t *testing.T, c *clustertest.Cluster, observers []int, id, state string, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	clustertest.Eventually(t, bound, fmt.Sprintf("%v see %s %s", observers, id, state), func() error {
		for _, i := range observers {
			ms, err := members(context.Background(), c, i)
			if err != nil {
				return err
			}
			if got := ms[id].GetState(); got != state {
				return fmt.Errorf("%s sees %s %q", c.Node(i).ID, id, got)
			}
		}
		took = time.Since(since)
		return nil
	})
	return took
}

func others(c *clustertest.Cluster, i int) []int {
	var out []int
	for j := range c.Nodes() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

func TestClusterFormsAndTheCLIShowsIt(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	ctx := context.Background()
	var leaders []string
	for i, n := range c.Nodes() {
		out, stderr, err := c.CLI(ctx, "cluster", "members", "--node", n.HTTPURL(), "--format", "json")
		if err != nil {
			t.Fatalf("troupe cluster members on %s: %v\n%s", n.ID, err, stderr)
		}
		var ms troupev1.MembersResponse
		if err := protojson.Unmarshal([]byte(out), &ms); err != nil {
			t.Fatalf("members output: %v\n%s", err, out)
		}
		var ids []string
		for _, m := range ms.GetMembers() {
			if m.GetState() != "alive" || m.GetApi() == "" || m.GetRoute() == "" || m.GetForward() == "" || m.GetClusterId() == "" {
				t.Fatalf("%s lists %v", n.ID, m)
			}
			ids = append(ids, m.GetId())
		}
		sort.Strings(ids)
		if !slices.Equal(ids, []string{"n1", "n2", "n3"}) {
			t.Fatalf("%s lists %v, want n1 n2 n3", n.ID, ids)
		}
		table, _, err := c.CLI(ctx, "cluster", "status", "--node", n.HTTPURL())
		if err != nil || !strings.Contains(table, "3 alive") || !strings.Contains(table, "ready                  yes") {
			t.Fatalf("troupe cluster status on %s: %v\n%s", n.ID, err, table)
		}
		st, err := status(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		leaders = append(leaders, st.GetMetaLeader())
		if len(st.GetRoutes()) != 2 {
			t.Fatalf("%s has routes to %v, want the two others", n.ID, st.GetRoutes())
		}
	}
	if leaders[0] == "" || leaders[0] != leaders[1] || leaders[1] != leaders[2] {
		t.Fatalf("meta leaders %v: want one, the same on every node", leaders)
	}
	// The data dir records the node id and the cluster id.
	b, err := os.ReadFile(filepath.Join(c.Node(0).DataDir, "node.json"))
	if err != nil || !strings.Contains(string(b), `"node_id": "n1"`) || !strings.Contains(string(b), "cluster_id") {
		t.Fatalf("node.json: %v\n%s", err, b)
	}
}

// TestClusterKillDetectRestart kills one node of three with SIGKILL: the
// two others mark it failed (serf, tuned timers), a new JetStream meta
// leader is elected when it led, and restarted on its data dir it rejoins
// under the same id.
func TestClusterKillDetectRestart(t *testing.T) {
	runs := 3
	if clustertest.Long() {
		runs = 20
	}
	c := startCluster(t, clustertest.Options{Nodes: 3})
	var detect []time.Duration
	for r := range runs {
		leader := waitMembers(t, c, []int{0, 1, 2}, 30*time.Second)
		victim := r % 3
		if r == 0 { // make sure one run kills the meta leader
			for i, n := range c.Nodes() {
				if n.ID == leader {
					victim = i
				}
			}
		}
		v := c.Node(victim)
		t0 := time.Now()
		v.Kill()
		d := waitState(t, c, others(c, victim), v.ID, "failed", t0, 10*time.Second)
		detect = append(detect, d)
		msg := fmt.Sprintf("run %d: killed %s; failed after %s", r+1, v.ID, d.Round(time.Millisecond))
		if v.ID == leader {
			var newLeader string
			clustertest.Eventually(t, 30*time.Second, "a new meta leader", func() error {
				st, err := status(context.Background(), c, others(c, victim)[0])
				if err != nil {
					return err
				}
				if l := st.GetMetaLeader(); l == "" || l == v.ID {
					return fmt.Errorf("meta leader %q", l)
				}
				newLeader = st.GetMetaLeader()
				return nil
			})
			msg += fmt.Sprintf("; it led the JetStream meta group, %s leads after %s", newLeader, time.Since(t0).Round(time.Millisecond))
		}
		t.Log(msg)
		if err := v.Restart(); err != nil {
			t.Fatal(err)
		}
		waitMembers(t, c, []int{0, 1, 2}, 30*time.Second)
	}
	slices.Sort(detect)
	median := detect[len(detect)/2]
	t.Logf("failure detection over %d kills: min %s, median %s, p90 %s, max %s", len(detect), detect[0].Round(time.Millisecond),
		median.Round(time.Millisecond), detect[len(detect)*9/10].Round(time.Millisecond), detect[len(detect)-1].Round(time.Millisecond))
	if median > 2*time.Second {
		t.Fatalf("median failure detection %s, want at most 2s", median)
	}
}

func TestClusterSIGTERMLeaves(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	v := c.Node(2)
	t0 := time.Now()
	done := make(chan struct{})
	var code int
	var err error
	go func() {
		defer close(done)
		code, _, err = v.Term()
	}()
	d := waitState(t, c, []int{0, 1}, v.ID, "left", t0, 5*time.Second)
	<-done
	if err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v", code, err)
	}
	t.Logf("the others saw %s left after %s", v.ID, d.Round(time.Millisecond))
	if d > time.Second {
		t.Fatalf("left seen after %s, want within 1s", d)
	}
	if strings.Contains(c.Node(0).Log()+c.Node(1).Log(), `"EventMemberFailed: n3`) {
		t.Fatal("a graceful leave was seen as a failure")
	}
}

// TestClusterRefusesBadPeers starts nodes that must not join: a wrong
// gossip key, wrong route credentials, a node id in use, a data dir of
// another cluster, and seeds that never answer.
func TestClusterRefusesBadPeers(t *testing.T) {
	multiProcess(t)
	const key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	c := clustertest.New(t, clustertest.Options{Nodes: 2, Binary: troupeBin,
		ExtraArgs: func(n *clustertest.Node) []string { return []string{"--gossip-key", key, "--join-timeout", "5s"} }})
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c, []int{0, 1}, 30*time.Second)
	ctx := context.Background()

	refused := func(name string, args func(n *clustertest.Node) []string, want string) {
		t.Run(name, func(t *testing.T) {
			n := c.AddNode()
			n.Args = args
			if err := n.StartNoWait(); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			code, err := n.Wait(wctx)
			if err != nil || code == 0 {
				t.Fatalf("the node was not refused: exit %d, %v\n%s", code, err, n.Log())
			}
			if !strings.Contains(n.Log(), want) {
				t.Fatalf("its log does not say %q:\n%s", want, n.Log())
			}
			for i := range 2 {
				ms, err := members(ctx, c, i)
				if err != nil {
					t.Fatal(err)
				}
				if m, ok := ms[n.ID]; ok && m.GetState() == "alive" {
					t.Fatalf("%s lists the refused node %s alive", c.Node(i).ID, n.ID)
				}
			}
			waitMembers(t, c, []int{0, 1}, 10*time.Second)
		})
	}
	with := func(extra ...string) func(n *clustertest.Node) []string {
		return func(n *clustertest.Node) []string {
			args := clustertest.ClusterArgs(n)
			// The default args join every other node; keep the two good ones.
			for i, a := range args {
				if a == "--join" {
					args[i+1] = c.Node(0).GossipAddr() + "," + c.Node(1).GossipAddr()
				}
			}
			return append(args, extra...)
		}
	}
	refused("wrong gossip key", with("--gossip-key", "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=", "--join-timeout", "5s"),
		"gossip encryption key does not match")
	refused("no gossip key", with("--join-timeout", "5s"), "gossip encryption key does not match")
	refused("wrong route credentials", with("--gossip-key", key, "--cluster-secret", "not-the-one", "--join-timeout", "5s"),
		"NATS route credentials")
	refused("node id in use", func(n *clustertest.Node) []string {
		args := with("--gossip-key", key, "--join-timeout", "5s")(n)
		for i, a := range args {
			if a == "--node-id" {
				args[i+1] = c.Node(0).ID
			}
		}
		return args
	}, "already used by the member")
	refused("unreachable seeds", func(n *clustertest.Node) []string {
		args := with("--gossip-key", key, "--join-timeout", "2s")(n)
		for i, a := range args {
			if a == "--join" {
				args[i+1] = n.IP + ":1"
			}
		}
		return args
	}, "join "+"127.0.0.1:1")

	t.Run("data dir of another cluster", func(t *testing.T) {
		other := clustertest.New(t, clustertest.Options{Nodes: 1, Binary: troupeBin,
			ExtraArgs: func(n *clustertest.Node) []string { return []string{"--gossip-key", key} }})
		other.Node(0).Args = func(n *clustertest.Node) []string {
			args := append(clustertest.ClusterArgs(n), "--gossip-key", key)
			for i, a := range args {
				if a == "--node-id" {
					args[i+1] = "x1"
				}
			}
			return args
		}
		// A cluster of one never becomes ready (JetStream needs a quorum,
		// so the replicated journal waits for a second node), but it has
		// named its cluster, in its log and its data dir, by then.
		if err := other.Node(0).StartNoWait(); err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := other.Node(0).WaitLog(lctx, `"msg":"nats ready"`) // after node.json records the cluster
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`"msg":"new cluster","node":"x1","cluster":"([0-9a-f]+)"`).FindStringSubmatch(other.Node(0).Log())
		if m == nil {
			t.Fatalf("no cluster id in the founding node's log:\n%s", other.Node(0).Log())
		}
		otherID := m[1]
		other.Node(0).Kill()
		mine, err := status(ctx, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := c.AddNode()
		n.Args = func(n *clustertest.Node) []string {
			args := with("--gossip-key", key, "--join-timeout", "5s")(n)
			for i, a := range args {
				if a == "--data-dir" {
					args[i+1] = other.Node(0).DataDir
				}
				if a == "--node-id" {
					args[i+1] = "x1"
				}
			}
			return args
		}
		if err := n.StartNoWait(); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if code, err := n.Wait(wctx); err != nil || code == 0 {
			t.Fatalf("not refused: exit %d %v\n%s", code, err, n.Log())
		}
		if !strings.Contains(n.Log(), otherID) || !strings.Contains(n.Log(), mine.GetClusterId()) {
			t.Fatalf("the refusal does not name both clusters %s and %s:\n%s", otherID, mine.GetClusterId(), n.Log())
		}
	})
}

// TestClusterPartitionIsolatesOneNode cuts one node off from the two
// others with network namespaces: the majority marks it failed and keeps a
// JetStream meta leader, the isolated node says it is not ready, and after
// healing there is one membership again.
func TestClusterPartitionIsolatesOneNode(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3, Namespaces: true})
	ctx := context.Background()
	leader := waitMembers(t, c, []int{0, 1, 2}, 30*time.Second)
	victim := 2
	for i, n := range c.Nodes() {
		if n.ID == leader {
			victim = i // isolate the meta leader: the harder case
		}
	}
	v := c.Node(victim)
	t0 := time.Now()
	c.Isolate(victim)
	d := waitState(t, c, others(c, victim), v.ID, "failed", t0, 10*time.Second)
	t.Logf("isolated %s (the meta leader); the majority marked it failed after %s", v.ID, d.Round(time.Millisecond))
	clustertest.Eventually(t, 30*time.Second, "the majority elects a meta leader", func() error {
		for _, i := range others(c, victim) {
			st, err := status(ctx, c, i)
			if err != nil {
				return err
			}
			if l := st.GetMetaLeader(); l == "" || l == v.ID || !st.GetReady() {
				return fmt.Errorf("%s: meta leader %q, ready %v (%s)", c.Node(i).ID, l, st.GetReady(), st.GetReason())
			}
		}
		return nil
	})
	t.Logf("the majority has a new meta leader after %s", time.Since(t0).Round(time.Millisecond))
	clustertest.Eventually(t, 15*time.Second, "the isolated node reports not ready", func() error {
		resp, err := c.HTTPClient().Get(v.HTTPURL() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			return fmt.Errorf("/readyz %d", resp.StatusCode)
		}
		return nil
	})
	c.Heal()
	waitMembers(t, c, []int{0, 1, 2}, 60*time.Second)
	t.Logf("healed: one membership after %s", time.Since(t0).Round(time.Millisecond))
}

// TestClusterFirstBootSeeds boots new clusters the ways the README shows:
// one founding node that the others join, and every node given every
// node (itself included) as seeds, all started at once.
func TestClusterFirstBootSeeds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seeds func(c *clustertest.Cluster, n *clustertest.Node) []string
	}{
		{"one seed", func(c *clustertest.Cluster, n *clustertest.Node) []string {
			if n.Index == 0 {
				return nil // founds the cluster
			}
			return []string{c.Node(0).GossipAddr()}
		}},
		{"three seeds", func(c *clustertest.Cluster, n *clustertest.Node) []string {
			return []string{c.Node(0).GossipAddr(), c.Node(1).GossipAddr(), c.Node(2).GossipAddr()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *clustertest.Cluster
			c = clustertest.New(t, clustertest.Options{Nodes: 3, Binary: troupeBin, Args: func(n *clustertest.Node) []string {
				args := withoutFlag(clustertest.ClusterArgs(n), "--join")
				if s := tc.seeds(c, n); len(s) > 0 {
					args = append(args, "--join", strings.Join(s, ","))
				}
				return args
			}})
			if err := c.StartAll(); err != nil {
				t.Fatal(err)
			}
			waitMembers(t, c, []int{0, 1, 2}, 30*time.Second)
			ids := map[string]bool{}
			for i := range c.Nodes() {
				st, err := status(context.Background(), c, i)
				if err != nil {
					t.Fatal(err)
				}
				ids[st.GetClusterId()] = true
			}
			if len(ids) != 1 {
				t.Fatalf("cluster ids %v: want one", ids)
			}
		})
	}
}

// TestCluster16Nodes (long run) starts 16 nodes as child processes on
// this machine: three carry JetStream, all carry shards (96, the
// default). Every node must see 16 alive, and every shard must be served
// by one node, the most loaded holding at most 1.1 x the mean; the time
// to converge and each node's memory are reported.
func TestCluster16Nodes(t *testing.T) {
	if !clustertest.Long() {
		t.Skip("long run: TROUPE_LONG=1 (docs/testing.md)")
	}
	const nodes = 16
	var c *clustertest.Cluster
	c = clustertest.New(t, clustertest.Options{Nodes: nodes, Binary: troupeBin, ReadyTimeout: 3 * time.Minute,
		Args: func(n *clustertest.Node) []string {
			args := withoutFlag(withoutFlag(clustertest.ClusterArgs(n), "--join"), "--shards")
			args = append(args, "--shards", "96", "--join", strings.Join([]string{c.Node(0).GossipAddr(), c.Node(1).GossipAddr(), c.Node(2).GossipAddr()}, ","))
			if n.Index >= 3 {
				args = append(args, "--roles", "shards")
			}
			return args
		}})
	t0 := time.Now()
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	all := make([]int, nodes)
	for i := range all {
		all[i] = i
	}
	waitMembers(t, c, all, 3*time.Minute)
	took := time.Since(t0)
	served := waitServedN(t, c, all, 96, time.Now(), 3*time.Minute)
	owners := ownersOf(t, c, all)
	var per []int
	for i := range all {
		per = append(per, countOwned(owners, i))
	}
	slices.Sort(per)
	t.Logf("96 shards served %s after the members converged; shards per node: %v", served.Round(time.Millisecond), per)
	if mean := 96.0 / nodes; float64(per[len(per)-1]) > 1.1*mean {
		t.Errorf("the most loaded node holds %d shards, more than 1.1 x the mean %.1f", per[len(per)-1], mean)
	}
	var rss []int
	for _, n := range c.Nodes() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.PID()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			var kb int
			if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
				rss = append(rss, kb)
			}
		}
	}
	slices.Sort(rss)
	t.Logf("%d nodes (3 with JetStream) see each other alive, ready, one meta leader: %s after the first start", nodes, took.Round(time.Millisecond))
	t.Logf("resident memory per node: min %d MiB, median %d MiB, max %d MiB", rss[0]/1024, rss[len(rss)/2]/1024, rss[len(rss)-1]/1024)
}

// withoutFlag drops a flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}
