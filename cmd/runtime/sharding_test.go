package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/cluster/clustertest"
	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// The cluster harness runs 8 shards (clustertest.ClusterArgs).
const testShards = 8

// servedBy asks each node in nodes which shards it serves, and returns
// shard → serving nodes.
func servedBy(ctx context.Context, c *clustertest.Cluster, nodes []int) (map[uint32][]string, error) {
	out := map[uint32][]string{}
	for _, i := range nodes {
		cl := troupev1connect.NewClusterServiceClient(c.HTTPClient(), c.Node(i).HTTPURL())
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cl.Shards(rctx, connect.NewRequest(&troupev1.ShardsRequest{}))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Node(i).ID, err)
		}
		for _, s := range resp.Msg.GetShards() {
			if s.GetState() == "serving" {
				out[s.GetShard()] = append(out[s.GetShard()], c.Node(i).ID)
			}
		}
	}
	return out, nil
}

// waitServed waits until every shard is served by exactly one of nodes,
// and returns how long that took since t0.
func waitServed(t *testing.T, c *clustertest.Cluster, nodes []int, t0 time.Time, bound time.Duration) time.Duration {
	t.Helper()
	return waitServedN(t, c, nodes, testShards, t0, bound)
}

// waitPlaced waits until placement has settled over nodes: every shard
// is served by the node that every one of them names as its target (a
// node that joined last may otherwise still be taking its share).
func waitPlaced(t *testing.T, c *clustertest.Cluster, nodes []int, bound time.Duration) {
	t.Helper()
	clustertest.Eventually(t, bound, "every shard served where placement puts it", func() error {
		served := map[uint32]string{}
		targets := map[uint32]string{}
		for _, i := range nodes {
			cl := troupev1connect.NewClusterServiceClient(c.HTTPClient(), c.Node(i).HTTPURL())
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := cl.Shards(rctx, connect.NewRequest(&troupev1.ShardsRequest{}))
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", c.Node(i).ID, err)
			}
			for _, sh := range resp.Msg.GetShards() {
				n := sh.GetShard()
				if tg, ok := targets[n]; ok && tg != sh.GetTarget() {
					return fmt.Errorf("shard %d: targets %s and %s", n, tg, sh.GetTarget())
				}
				targets[n] = sh.GetTarget()
				if sh.GetState() == "serving" {
					if prev, ok := served[n]; ok {
						return fmt.Errorf("shard %d served by %s and %s", n, prev, c.Node(i).ID)
					}
					served[n] = c.Node(i).ID
				}
			}
		}
		for n, tg := range targets {
			if served[n] != tg {
				return fmt.Errorf("shard %d served by %q, placed on %q", n, served[n], tg)
			}
		}
		return nil
	})
}

func urls(c *clustertest.Cluster) []string {
	var out []string
	for _, n := range c.Nodes() {
		out = append(out, n.HTTPURL())
	}
	return out
}

// checkHistory settles the client's unknown commands, checks the
// recorded history for linearizability and audits the accounts' streams
// (read through node reader): nothing acknowledged lost, nothing applied
// twice, every entity's sequence gap-free.
func checkHistory(t *testing.T, c *clustertest.Cluster, cl *linear.Client, reader int) linear.AuditReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Settle(ctx); err != nil {
		t.Fatalf("settle: %v", err)
	}
	// Server-side failures that are not the cluster's retryable ones are
	// bugs: say what they were.
	seen := map[string]bool{}
	for _, op := range cl.Recorder().Ops() {
		if e := op.Output.Err; strings.Contains(e, "internal") && !seen[e] && len(seen) < 5 {
			seen[e] = true
			t.Logf("an internal error: %s", e)
		}
	}
	res, info, err := cl.Recorder().Check(120*time.Second, t.TempDir())
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if res == porcupine.Unknown {
		t.Fatalf("the checker ran out of time (%+v): too many operations of unknown outcome to decide", info)
	}
	if res != porcupine.Ok {
		// The history of each account the checker could not linearize.
		t0 := int64(0)
		for _, op := range cl.Recorder().Ops() {
			if t0 == 0 || op.Call < t0 {
				t0 = op.Call
			}
		}
		for _, a := range info.Illegal {
			for _, op := range cl.Recorder().Ops() {
				if op.Input.Account == a {
					t.Logf("%s: client %d [%d ms, %d ms] %+v -> %+v %s", a, op.Client, (op.Call-t0)/1e6, (op.Return-t0)/1e6, op.Input, op.Output, op.Meta)
				}
			}
		}
		t.Fatalf("history not linearizable (%s): %+v", res, info)
	}
	events, err := linear.ReadStreams(ctx, c.HTTPClient(), c.Node(reader).HTTPURL(), cl.Accounts())
	if err != nil {
		t.Fatal(err)
	}
	for a, evs := range events {
		for i, e := range evs {
			if e.Sequence != uint64(i+1) {
				t.Fatalf("account %s: event %d has sequence %d: a gap or a fork", a, i, e.Sequence)
			}
		}
	}
	rep := linear.Audit(cl.Recorder().Ops(), events)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if rep.Acknowledged == 0 {
		t.Fatal("no write was acknowledged: the test tested nothing")
	}
	return rep
}

// harnessDialer dials through the harness (into the client namespace when
// the nodes live in network namespaces).
type harnessDialer struct{ c *clustertest.Cluster }

func (d harnessDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.c.Dial(ctx, network, addr)
}

// checkReplicas waits until every replica of every shard stream is
// current, with no lag, as the stream's leader reports it.
func checkReplicas(t *testing.T, c *clustertest.Cluster, via int) {
	t.Helper()
	nc, err := nats.Connect(c.Node(via).NATSURL(), nats.SetCustomDialer(harnessDialer{c}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "every replica of every shard stream current", func() error {
		for s := range testShards {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := js.Stream(ctx, fmt.Sprintf("TROUPE_P%d", s))
			cancel()
			if err != nil {
				return err
			}
			info := st.CachedInfo()
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("stream %s has no leader", info.Config.Name)
			}
			if len(info.Cluster.Replicas) != info.Config.Replicas-1 {
				return fmt.Errorf("stream %s: %d followers, want %d", info.Config.Name, len(info.Cluster.Replicas), info.Config.Replicas-1)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Lag != 0 || r.Offline {
					return fmt.Errorf("stream %s: replica %s current %v lag %d offline %v", info.Config.Name, r.Name, r.Current, r.Lag, r.Offline)
				}
			}
		}
		return nil
	})
}

// TestShardedClusterSurvivesKills: writers through all three nodes while
// nodes are killed (SIGKILL) one at a time and restarted; the shards of a
// dead node are served again by the others within 10 s; no acknowledged
// write is lost, none is applied twice, every account's stream is gap-free,
// the history is linearizable, and every replica is identical afterwards.
func TestShardedClusterSurvivesKills(t *testing.T) {
	cycles := 3
	if clustertest.Long() {
		cycles = 20
	}
	c := startCluster(t, clustertest.Options{Nodes: 3})
	all := []int{0, 1, 2}
	waitServed(t, c, all, time.Now(), 60*time.Second)

	cl, err := linear.New(linear.Config{
		// Many accounts, few operations each: the checker's cost grows
		// fast with an account's overlapping operations of unknown outcome.
		Nodes: urls(c), HTTPClient: c.HTTPClient(), Accounts: 64, Workers: 6, MaxOpsPerAccount: 60,
		Duration: time.Duration(cycles)*15*time.Second + 5*time.Second, AttemptTimeout: 3 * time.Second, Attempts: 12,
		// A forward that found no node serving the shard says so; the
		// check and the audit catch it if that promise is false.
		NotApplied: func(code, msg string) bool { return code == "unavailable" && strings.Contains(msg, "was not applied") },
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		stats linear.Stats
		rerr  error
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		stats, rerr = cl.Run(ctx)
	}()
	var failover []time.Duration
	for r := range cycles {
		time.Sleep(2 * time.Second) // load before the kill
		victim := r % 3
		v := c.Node(victim)
		t0 := time.Now()
		v.Kill()
		d := waitServed(t, c, others(c, victim), t0, 20*time.Second)
		failover = append(failover, d)
		t.Logf("cycle %d: killed %s; its shards served again after %s", r+1, v.ID, d.Round(time.Millisecond))
		// The goal is 10 s (JetStream's Raft elections after a crash take
		// 4-9 s); on a shared 2-core machine under this load a cycle has
		// taken 11 s. The long run holds every cycle to 10 s and the
		// median to 6 s; the default suite guards against regressions.
		bound := 15 * time.Second
		if clustertest.Long() {
			bound = 10 * time.Second
		}
		if d > bound {
			t.Errorf("cycle %d: failover took %s, want at most %s", r+1, d, bound)
		}
		if err := v.Restart(); err != nil {
			t.Fatal(err)
		}
		waitMembers(t, c, all, 60*time.Second)
		waitServed(t, c, all, time.Now(), 60*time.Second)
		// The restarted node's replicas catch up before the next kill:
		// otherwise that kill may leave a stream without a quorum.
		checkReplicas(t, c, (victim+1)%3)
	}
	cancel()
	wg.Wait()
	if rerr != nil && rerr != context.Canceled {
		t.Fatalf("load: %v", rerr)
	}
	t.Logf("load: %s", stats)
	rep := checkHistory(t, c, cl, 1)
	t.Logf("audit: %s", rep)
	checkReplicas(t, c, 0)
	slices.Sort(failover)
	t.Logf("failover over %d kills: min %s, median %s, max %s", len(failover), failover[0].Round(time.Millisecond),
		failover[len(failover)/2].Round(time.Millisecond), failover[len(failover)-1].Round(time.Millisecond))
	if m := failover[len(failover)/2]; clustertest.Long() && m > 6*time.Second {
		t.Fatalf("median failover %s, want at most 6 s", m)
	}
}

// leaderOf asks node i who runs singleton name.
func leaderOf(ctx context.Context, c *clustertest.Cluster, i int, name string) (string, uint64, error) {
	cl := troupev1connect.NewClusterServiceClient(c.HTTPClient(), c.Node(i).HTTPURL())
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := cl.Leaders(rctx, connect.NewRequest(&troupev1.LeadersRequest{}))
	if err != nil {
		return "", 0, err
	}
	for _, l := range resp.Msg.GetLeaders() {
		if l.GetSingleton() == name {
			return l.GetNode(), l.GetEpoch(), nil
		}
	}
	return "", 0, fmt.Errorf("%s does not know singleton %q", c.Node(i).ID, name)
}

// TestSingletonMovesOnStopAndOnKill: the bank's large-transfer monitor runs
// on one node; SIGTERM of that node hands it to another within 0.5 s;
// SIGKILL of its node moves it too; its epoch rises every time, and the
// large transfers made meanwhile are flagged exactly once.
func TestSingletonMovesOnStopAndOnKill(t *testing.T) {
	const monitor = "large-transfer-monitor"
	c := startCluster(t, clustertest.Options{Nodes: 3})
	all := []int{0, 1, 2}
	waitServed(t, c, all, time.Now(), 60*time.Second)
	// A node that came up last may still be taking its shards, with the
	// lease bucket's JetStream traffic that goes with it: a handover
	// timed then measures the moves (a CI rehearsal saw 2.2 s).
	waitPlaced(t, c, all, 60*time.Second)
	ctx := context.Background()
	current := func(nodes []int) (string, uint64, error) {
		var leader string
		var epoch uint64
		for _, i := range nodes {
			l, e, err := leaderOf(ctx, c, i, monitor)
			if err != nil {
				return "", 0, err
			}
			if l == "" || (leader != "" && (l != leader || e != epoch)) {
				return "", 0, fmt.Errorf("%s sees leader %q epoch %d; others %q %d", c.Node(i).ID, l, e, leader, epoch)
			}
			leader, epoch = l, e
		}
		return leader, epoch, nil
	}
	var leader string
	var epoch uint64
	clustertest.Eventually(t, 30*time.Second, "one leader of the monitor", func() (err error) {
		leader, epoch, err = current(all)
		return err
	})
	idx := func(id string) int {
		for i, n := range c.Nodes() {
			if n.ID == id {
				return i
			}
		}
		t.Fatalf("no node %s", id)
		return -1
	}
	send := func(node int, kind, id string, payload string) {
		t.Helper()
		if _, stderr, err := c.CLI(ctx, "send", kind+"/"+id, payload, "--node", c.Node(node).HTTPURL()); err != nil {
			t.Fatalf("send %s/%s %s: %v: %s", kind, id, payload, err, stderr)
		}
	}
	send(0, "account", "big-a", `{"type":"Open","owner":"a"}`)
	send(1, "account", "big-a", `{"type":"Deposit","amount":100000}`)
	send(2, "account", "big-b", `{"type":"Open","owner":"b"}`)
	transfer := 0
	large := func(node int) {
		transfer++
		send(node, "transfer", fmt.Sprintf("big-%d", transfer), `{"type":"Start","from":"big-a","to":"big-b","amount":20000}`)
	}

	// Graceful: SIGTERM the leader; another node leads within 0.5 s.
	large(0)
	li := idx(leader)
	t0 := time.Now()
	var termWG sync.WaitGroup
	termWG.Add(1)
	go func() {
		defer termWG.Done()
		if _, _, err := c.Node(li).Term(); err != nil {
			t.Errorf("SIGTERM %s: %v", leader, err)
		}
	}()
	var next string
	var nextEpoch uint64
	// The handover is done when another node runs the monitor under a
	// higher epoch, as that node itself reports; the third node learns it
	// from its watch of the lease bucket, which may lag (its watcher's
	// consumer can live on the node that stops), so agreement is checked
	// after, with its own bound.
	clustertest.Eventually(t, 10*time.Second, "the monitor moves after SIGTERM", func() error {
		for _, i := range others(c, li) {
			l, e, err := leaderOf(ctx, c, i, monitor)
			if err == nil && l == c.Node(i).ID && e > epoch {
				next, nextEpoch = l, e
				return nil
			}
		}
		return fmt.Errorf("no other node leads the monitor yet")
	})
	took := time.Since(t0)
	clustertest.Eventually(t, 10*time.Second, "the other nodes to agree on the monitor's new leader", func() error {
		l, e, err := current(others(c, li))
		if err != nil {
			return err
		}
		if l != next || e != nextEpoch {
			return fmt.Errorf("the others see %s epoch %d, the new leader is %s epoch %d", l, e, next, nextEpoch)
		}
		return nil
	})
	agreed := time.Since(t0)
	termWG.Wait()
	t.Logf("SIGTERM of %s: %s leads the monitor (epoch %d → %d) after %s; the other nodes agree after %s",
		leader, next, epoch, nextEpoch, took.Round(time.Millisecond), agreed.Round(time.Millisecond))
	if nextEpoch <= epoch {
		t.Fatalf("epoch did not rise: %d → %d", epoch, nextEpoch)
	}
	// The goal is 0.5 s (usually about 0.1 s here). A lease renewal in
	// flight when SIGTERM arrives delays the release by up to the lease
	// request timeout (1 s): the default suite allows for it, the long
	// run holds the goal.
	bound := 1500 * time.Millisecond
	if clustertest.Long() {
		bound = 500 * time.Millisecond
	}
	if took > bound {
		t.Errorf("graceful handover took %s, want at most %s", took, bound)
	}
	if err := c.Node(li).Start(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c, all, 60*time.Second)

	// Crash: SIGKILL the leader; another node takes over (1 kill, 20 in
	// the long run), with a large transfer made before each kill.
	kills := 1
	if clustertest.Long() {
		kills = 20
	}
	var takeovers []time.Duration
	for k := range kills {
		large(k % 3)
		leader, epoch = next, nextEpoch
		li = idx(leader)
		t0 = time.Now()
		c.Node(li).Kill()
		clustertest.Eventually(t, 30*time.Second, "the monitor moves after SIGKILL", func() error {
			l, e, err := current(others(c, li))
			if err != nil {
				return err
			}
			if l == leader || e <= epoch {
				return fmt.Errorf("led by %s epoch %d", l, e)
			}
			next, nextEpoch = l, e
			return nil
		})
		d := time.Since(t0)
		takeovers = append(takeovers, d)
		t.Logf("SIGKILL %d of %s: %s leads the monitor (epoch %d → %d) after %s", k+1, leader, next, epoch, nextEpoch, d.Round(time.Millisecond))
		if err := c.Node(li).Restart(); err != nil {
			t.Fatal(err)
		}
		waitMembers(t, c, all, 60*time.Second)
	}
	slices.Sort(takeovers)
	t.Logf("takeover after SIGKILL over %d kills: min %s, median %s, max %s", len(takeovers),
		takeovers[0].Round(time.Millisecond), takeovers[len(takeovers)/2].Round(time.Millisecond), takeovers[len(takeovers)-1].Round(time.Millisecond))
	large(2)

	// Every large transfer is flagged, once, as the alert streams show.
	for i := 1; i <= transfer; i++ {
		id := fmt.Sprintf("big-%d", i)
		clustertest.Eventually(t, 30*time.Second, "transfer "+id+" flagged", func() error {
			out, stderr, err := c.CLI(ctx, "events", "replay", "--stream", "alert/"+id, "--format", "json", "--node", c.Node(0).HTTPURL())
			if err != nil {
				return fmt.Errorf("%v: %s", err, stderr)
			}
			if n := strings.Count(out, `"Flagged"`); n != 1 {
				return fmt.Errorf("alert/%s has %d Flagged events: %s", id, n, out)
			}
			return nil
		})
	}
}

// TestShardedReadYourWrites: a command through one node, then a query
// with the command's token through another node, sees the command's
// effect, for many pairs of nodes and accounts.
func TestShardedReadYourWrites(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	waitServed(t, c, []int{0, 1, 2}, time.Now(), 60*time.Second)
	ctx := context.Background()
	cmds := make([]troupev1connect.CommandServiceClient, 3)
	queries := make([]troupev1connect.QueryServiceClient, 3)
	for i, n := range c.Nodes() {
		cmds[i] = troupev1connect.NewCommandServiceClient(c.HTTPClient(), n.HTTPURL())
		queries[i] = troupev1connect.NewQueryServiceClient(c.HTTPClient(), n.HTTPURL())
	}
	send := func(i int, id, typ string, payload map[string]any) *troupev1.SendResponse {
		t.Helper()
		p, err := structpb.NewStruct(payload)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		resp, err := cmds[i].Send(rctx, connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: id, Type: typ, Payload: p}))
		if err != nil {
			t.Fatalf("%s %s via %s: %v", typ, id, c.Node(i).ID, err)
		}
		return resp.Msg
	}
	const accounts, rounds = 6, 5
	balance := map[string]int64{}
	pairs := 0
	for a := range accounts {
		id := fmt.Sprintf("ryw-%d", a)
		send(a%3, id, "Open", map[string]any{"owner": "o"})
		for r := range rounds {
			w, q := (a+r)%3, (a+r+1)%3 // write through one node, read through the next
			amount := int64(10*r + a + 1)
			resp := send(w, id, "Deposit", map[string]any{"amount": amount, "ref": fmt.Sprintf("%s-%d", id, r)})
			balance[id] += amount
			params, _ := structpb.NewStruct(map[string]any{"id": id})
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ans, err := queries[q].Query(rctx, connect.NewRequest(&troupev1.QueryRequest{Name: "balance", Params: params, MinPosition: resp.GetToken(), TimeoutMs: 8000}))
			cancel()
			if err != nil {
				t.Fatalf("balance of %s via %s with token %s: %v", id, c.Node(q).ID, resp.GetToken(), err)
			}
			if got := int64(ans.Msg.GetResult().GetNumberValue()); got != balance[id] {
				t.Fatalf("balance of %s via %s after a deposit via %s (token %s): %d, want %d",
					id, c.Node(q).ID, c.Node(w).ID, resp.GetToken(), got, balance[id])
			}
			pairs++
		}
	}
	t.Logf("%d writes read back through another node", pairs)

	// The dashboard of a clustered node shows the shard map and the
	// singleton's leader.
	clustertest.Eventually(t, 10*time.Second, "the dashboard shows shards and leaders", func() error {
		resp, err := c.HTTPClient().Get(c.Node(1).HTTPURL() + "/ui/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		page := string(b)
		for _, want := range []string{"Shard map: 8 shards", "large-transfer-monitor"} {
			if !strings.Contains(page, want) {
				return fmt.Errorf("/ui/ has no %q", want)
			}
		}
		return nil
	})

	// troupe events replay and stats work through any node.
	var first string
	for i, n := range c.Nodes() {
		out, stderr, err := c.CLI(ctx, "events", "replay", "--stream", "account/ryw-0", "--format", "json", "--node", n.HTTPURL())
		if err != nil {
			t.Fatalf("events replay via %s: %v: %s", n.ID, err, stderr)
		}
		if got := strings.Count(out, `"Deposited"`); got != rounds {
			t.Fatalf("events replay via %s shows %d deposits, want %d:\n%s", n.ID, got, rounds, out)
		}
		if i == 0 {
			first = out
		} else if out != first {
			t.Fatalf("events replay differs between %s and %s:\n%s\n%s", c.Node(0).ID, n.ID, first, out)
		}
		stats, stderr, err := c.CLI(ctx, "events", "stats", "--node", n.HTTPURL())
		if err != nil || !strings.Contains(stats, "events") {
			t.Fatalf("events stats via %s: %v: %s%s", n.ID, err, stats, stderr)
		}
	}
	// The commands sent to non-owners went over the direct link (ADR
	// 0020): the nodes found each other's link addresses in gossip and
	// proved the cluster secret.
	var link, viaNATS int
	for _, n := range c.Nodes() {
		l, nn := forwardCounts(t, c.HTTPClient(), n.HTTPURL())
		link, viaNATS = link+l, viaNATS+nn
	}
	t.Logf("forward attempts: %d over the link, %d over NATS", link, viaNATS)
	if link == 0 {
		t.Fatalf("no forward went over the direct link (%d over NATS)", viaNATS)
	}
}

// forwardCounts reads a node's troupe_forward_attempts_total counters.
func forwardCounts(t *testing.T, hc *http.Client, base string) (link, viaNATS int) {
	t.Helper()
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var n float64
		switch {
		case strings.HasPrefix(line, `troupe_forward_attempts_total{via="link"} `):
			fmt.Sscan(strings.Fields(line)[1], &n)
			link = int(n)
		case strings.HasPrefix(line, `troupe_forward_attempts_total{via="nats"} `):
			fmt.Sscan(strings.Fields(line)[1], &n)
			viaNATS = int(n)
		}
	}
	return link, viaNATS
}

// startLoad starts a load client over every node of c in the background; the
// returned func stops it and returns its stats.
func startLoad(t *testing.T, c *clustertest.Cluster, nodes []string, d time.Duration) (*linear.Client, func() linear.Stats) {
	t.Helper()
	cl, err := linear.New(linear.Config{
		Nodes: nodes, HTTPClient: c.HTTPClient(), Accounts: 64, Workers: 6, MaxOpsPerAccount: 60,
		Duration: d, AttemptTimeout: 3 * time.Second, Attempts: 12,
		NotApplied: func(code, msg string) bool { return code == "unavailable" && strings.Contains(msg, "was not applied") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stats linear.Stats
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		stats, rerr = cl.Run(ctx)
	}()
	return cl, func() linear.Stats {
		cancel()
		<-done
		if rerr != nil && rerr != context.Canceled {
			t.Fatalf("load: %v", rerr)
		}
		return stats
	}
}

// retryable reports whether every error the load saw is one a client
// retries (the contract's retryable codes, or a timeout/transport error
// whose outcome is unknown).
func retryable(errs map[string]int) error {
	for code, n := range errs {
		switch code {
		case "unavailable", "deadline_exceeded", "resource_exhausted", "aborted", "client_timeout", "transport":
		default:
			return fmt.Errorf("%d errors %q, which is not retryable", n, code)
		}
	}
	return nil
}

// TestShardedJoinUnderLoad: a fourth node joins while writers run through
// the three others; a share of the shards moves to it within the failover
// bound, and the only failed commands are retryable ones.
func TestShardedJoinUnderLoad(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	waitServed(t, c, []int{0, 1, 2}, time.Now(), 60*time.Second)
	cl, stop := startLoad(t, c, urls(c), 30*time.Second)
	time.Sleep(2 * time.Second)
	n4 := c.AddNode()
	t0 := time.Now()
	if err := n4.Start(); err != nil {
		t.Fatal(err)
	}
	// Every shard is served by one node before the moves start too: wait
	// for the new node to serve a share, then for every shard again.
	var by map[uint32][]string
	clustertest.Eventually(t, 60*time.Second, "the new node serves a shard", func() error {
		var err error
		if by, err = servedBy(context.Background(), c, []int{3}); err != nil {
			return err
		}
		if len(by) == 0 {
			return errors.New("the new node serves no shard")
		}
		return nil
	})
	d := waitServed(t, c, []int{0, 1, 2, 3}, t0, 60*time.Second)
	if now, err := servedBy(context.Background(), c, []int{3}); err == nil {
		by = now
	}
	t.Logf("n4 started and serves %d of %d shards %s after its start", len(by), testShards, d.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // load after the move
	stats := stop()
	t.Logf("load: %s", stats)
	if err := retryable(stats.Errors); err != nil {
		t.Fatal(err)
	}
	rep := checkHistory(t, c, cl, 3)
	t.Logf("audit: %s", rep)
}

// TestShardedPartitionIsLinearizable: a node cut off from the two others
// by a network partition stops serving its shards, the majority takes them
// over, and after the heal the history of every account is linearizable,
// nothing acknowledged is lost or doubled, and the replicas agree.
func TestShardedPartitionIsLinearizable(t *testing.T) {
	schedules := 3
	if clustertest.Long() {
		schedules = 20
	}
	c := startCluster(t, clustertest.Options{Nodes: 3, Namespaces: true})
	all := []int{0, 1, 2}
	waitServed(t, c, all, time.Now(), 60*time.Second)
	cl, stop := startLoad(t, c, urls(c), time.Duration(schedules)*25*time.Second)
	for r := range schedules {
		time.Sleep(2 * time.Second)
		victim := r % 3
		v := c.Node(victim)
		t0 := time.Now()
		c.Isolate(victim) // the clients still reach it
		clustertest.Eventually(t, 15*time.Second, v.ID+" stops serving", func() error {
			by, err := servedBy(context.Background(), c, []int{victim})
			if err != nil {
				return nil // unreachable from here: it serves no client either
			}
			if len(by) > 0 {
				return fmt.Errorf("%s still serves %d shards", v.ID, len(by))
			}
			return nil
		})
		stopped := time.Since(t0)
		d := waitServed(t, c, others(c, victim), t0, 30*time.Second)
		t.Logf("schedule %d: cut %s off; it stopped serving after %s, the majority served every shard after %s",
			r+1, v.ID, stopped.Round(time.Millisecond), d.Round(time.Millisecond))
		time.Sleep(3 * time.Second) // load on the majority
		c.Heal()
		waitMembers(t, c, all, 60*time.Second)
		waitServed(t, c, all, time.Now(), 60*time.Second)
		checkReplicas(t, c, (victim+1)%3)
	}
	stats := stop()
	t.Logf("load: %s", stats)
	rep := checkHistory(t, c, cl, 0)
	t.Logf("audit: %s", rep)
	checkReplicas(t, c, 1)
}

// TestShardedNodeWithAnotherShardCountIsRefused: the shard count is fixed
// when the cluster is created; a node started with another one exits
// with an error that says so, and the cluster keeps serving.
func TestShardedNodeWithAnotherShardCountIsRefused(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	waitServed(t, c, []int{0, 1, 2}, time.Now(), 60*time.Second)
	n3 := c.Node(2)
	if _, _, err := n3.Term(); err != nil {
		t.Fatal(err)
	}
	n3.Args = func(n *clustertest.Node) []string {
		args := clustertest.ClusterArgs(n)
		for i := range args {
			if args[i] == "--shards" {
				args[i+1] = "16"
			}
		}
		return args
	}
	err := n3.Start()
	if err == nil {
		t.Fatal("a node with 16 shards joined a cluster of 8")
	}
	if !strings.Contains(n3.Log(), "the cluster's journal was created with 8 shards; this node is configured with 16 (--shards must match)") {
		t.Fatalf("start failed (%v) without naming the shard counts; log:\n%s", err, n3.Log())
	}
	waitServed(t, c, []int{0, 1}, time.Now(), 30*time.Second)
}

// TestShardedClusterStopsAllAtOnce: SIGTERM to every node at the same
// moment (JetStream loses its quorum while they stop): each still exits
// within its shutdown bound.
func TestShardedClusterStopsAllAtOnce(t *testing.T) {
	c := startCluster(t, clustertest.Options{Nodes: 3})
	waitServed(t, c, []int{0, 1, 2}, time.Now(), 60*time.Second)
	if _, stderr, err := c.CLI(context.Background(), "send", "account/stop-1", `{"type":"Open","owner":"o"}`, "--node", c.Node(0).HTTPURL()); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	var wg sync.WaitGroup
	took := make([]time.Duration, 3)
	codes := make([]int, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], took[i], errs[i] = c.Node(i).Term()
		}()
	}
	wg.Wait()
	for i := range 3 {
		t.Logf("%s: exit %d after %s", c.Node(i).ID, codes[i], took[i].Round(time.Millisecond))
		if errs[i] != nil {
			t.Fatalf("%s did not stop: %v", c.Node(i).ID, errs[i])
		}
		if took[i] > 20*time.Second {
			t.Fatalf("%s took %s to stop, want at most 20 s (shutdown bound 10 s)", c.Node(i).ID, took[i])
		}
	}
}
