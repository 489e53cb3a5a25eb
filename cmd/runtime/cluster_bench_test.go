package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/clustertest"
	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
	"github.com/troupe-dev/troupe/cluster/link"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// The cluster benchmarks of issue 12 (docs/benchmarks.md, "Cluster:
// forwarding, scale-out and the peer"): real troupe processes started by
// clustertest, a client in this process speaking Connect JSON over HTTP.
// They measure, they do not judge: a figure that misses its goal is
// logged, not failed, because the machine is shared; errors where none
// may happen fail. They run only with TROUPE_LONG set:
//
//	TROUPE_LONG=1 go test -count=1 -timeout 30m -run 'TestClusterBench' -v ./cmd/runtime
//
// TROUPE_BENCH_SHARDS overrides the shard count (default 8, the harness's),
// TROUPE_BENCH_NODES the forward latency cluster's size (default 3), and
// TROUPE_BENCH_ARGS adds flags to every node (A/B runs).
// The work happens in child processes, so there are no allocation figures
// here (b.ReportAllocs does not apply); in-process costs are in the
// packages' own benchmarks.

// benchShards is the shard count of the benchmark clusters.
func benchShards(t *testing.T) int {
	t.Helper()
	s := os.Getenv("TROUPE_BENCH_SHARDS")
	if s == "" {
		return testShards
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("TROUPE_BENCH_SHARDS=%q: want a positive whole number", s)
	}
	return n
}

func skipUnlessLongBench(t *testing.T) {
	t.Helper()
	if !clustertest.Long() {
		t.Skip("cluster benchmark: runs with TROUPE_LONG=1")
	}
}

// loadavg is /proc/loadavg's first three fields, logged beside figures.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// benchLinkPorts are the forward link ports of the last bench cluster's
// nodes, by node id (none with --forward-port in TROUPE_BENCH_ARGS).
var benchLinkPorts map[string]int

// startBenchCluster starts n clustered nodes with shards shards and waits
// until every shard is served once.
func startBenchCluster(t *testing.T, n, shards int) *clustertest.Cluster {
	t.Helper()
	opts := clustertest.Options{Nodes: n}
	var extra []string
	if shards != testShards {
		extra = []string{"--shards", strconv.Itoa(shards)}
	}
	// TROUPE_BENCH_ARGS: more flags for the nodes, for A/B runs (say
	// "--forward-port -1": forwards over NATS only).
	args := os.Getenv("TROUPE_BENCH_ARGS")
	extra = append(extra, strings.Fields(args)...)
	// Each node's forward link on a port known here, so that the latency
	// benchmark can time a bare request over it.
	ports := map[string]int{}
	var pmu sync.Mutex
	opts.ExtraArgs = func(n *clustertest.Node) []string {
		if strings.Contains(args, "--forward-port") {
			return extra
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		pmu.Lock()
		ports[n.ID] = port
		pmu.Unlock()
		return append(slices.Clip(extra), "--forward-port", strconv.Itoa(port))
	}
	c := startCluster(t, opts)
	pmu.Lock()
	benchLinkPorts = ports
	pmu.Unlock()
	waitServedN(t, c, allRunning(c), shards, time.Now(), 2*time.Minute)
	return c
}

// waitServedN is waitServed for a cluster of shards shards.
func waitServedN(t *testing.T, c *clustertest.Cluster, nodes []int, shards int, t0 time.Time, bound time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	clustertest.Eventually(t, bound, fmt.Sprintf("every shard served once by %v", nodes), func() error {
		by, err := servedBy(context.Background(), c, nodes)
		if err != nil {
			return err
		}
		for s := range uint32(shards) {
			if len(by[s]) != 1 {
				return fmt.Errorf("shard %d served by %v", s, by[s])
			}
		}
		took = time.Since(t0)
		return nil
	})
	return took
}

// ownersOf returns shard → index of the node serving it.
func ownersOf(t *testing.T, c *clustertest.Cluster, nodes []int) map[int]int {
	t.Helper()
	by, err := servedBy(context.Background(), c, nodes)
	if err != nil {
		t.Fatal(err)
	}
	idx := map[string]int{}
	for i, n := range c.Nodes() {
		idx[n.ID] = i
	}
	out := map[int]int{}
	for s, ids := range by {
		if len(ids) != 1 {
			t.Fatalf("shard %d served by %v", s, ids)
		}
		out[int(s)] = idx[ids[0]]
	}
	return out
}

// benchHTTP is an HTTP client for many concurrent callers (the harness's
// keeps 16 idle connections per node).
func benchHTTP(c *clustertest.Cluster) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil, DialContext: c.Dial, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
	}}
}

// jsonClients are Connect JSON command clients, one per node.
func jsonClients(hc *http.Client, urls []string) []troupev1connect.CommandServiceClient {
	out := make([]troupev1connect.CommandServiceClient, len(urls))
	for i, u := range urls {
		out[i] = troupev1connect.NewCommandServiceClient(hc, u, connect.WithProtoJSON())
	}
	return out
}

// deposit sends account/id Deposit{amount, ref}; key is the idempotency
// key ("" for none).
func deposit(ctx context.Context, cl troupev1connect.CommandServiceClient, id string, amount int64, ref, key string) error {
	p := map[string]any{"amount": amount}
	if ref != "" {
		p["ref"] = ref
	}
	st, err := structpb.NewStruct(p)
	if err != nil {
		return err
	}
	_, err = cl.Send(ctx, connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: id, Type: "Deposit", Payload: st, IdempotencyKey: key}))
	return err
}

// openAccounts opens ids through cl (an account already open is fine).
func openAccounts(t *testing.T, cls []troupev1connect.CommandServiceClient, ids []string) {
	t.Helper()
	sem := make(chan struct{}, 16)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, _ := structpb.NewStruct(map[string]any{"owner": "bench"})
			var err error
			for range 20 { // bounded: a shard may still be settling
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err = cls[i%len(cls)].Send(ctx, connect.NewRequest(&troupev1.SendRequest{
					Kind: "account", Id: id, Type: "Open", Payload: st, IdempotencyKey: id + "/open"}))
				cancel()
				if err == nil || strings.Contains(err.Error(), "already open") {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				mu.Lock()
				first = cmp(first, fmt.Errorf("open %s: %w", id, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// pct returns the q-quantile (0..1) of sorted ds (nearest rank).
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// TestClusterBenchForwardLatency: sequential Deposit commands to accounts
// owned by node 1, sent to node 1 (the owner) and to node 0 (which
// forwards them, over its direct link unless the nodes run with
// --forward-port -1), beside a raw NATS request from a client on node 0's
// NATS server to a responder on node 1's (across their route) with a
// payload of the same size, and a bare request over node 1's link.
func TestClusterBenchForwardLatency(t *testing.T) {
	skipUnlessLongBench(t)
	const (
		accounts = 32
		warm     = 300
		rounds   = 3000
		bodySize = 200 // bytes of the JSON request body, and of the raw request
	)
	shards := benchShards(t)
	// TROUPE_BENCH_NODES: the cluster's size (default 3; 2 compares with
	// the peer's 2-member run).
	nodes := 3
	if s := os.Getenv("TROUPE_BENCH_NODES"); s != "" {
		if n, err := strconv.Atoi(s); err != nil || n < 2 {
			t.Fatalf("TROUPE_BENCH_NODES=%q: want 2 or more", s)
		} else {
			nodes = n
		}
	}
	c := startBenchCluster(t, nodes, shards)
	owners := ownersOf(t, c, allRunning(c))
	const sender, owner = 0, 1
	var ids []string
	for i := 0; len(ids) < accounts; i++ {
		id := fmt.Sprintf("lat-%d", i)
		if owners[actors.ShardOf("account", id, shards)] == owner {
			ids = append(ids, id)
		}
	}
	hc := benchHTTP(c)
	cls := jsonClients(hc, []string{c.Node(sender).HTTPURL(), c.Node(owner).HTTPURL()})
	openAccounts(t, cls[1:], ids)

	// The raw ceiling: a responder on the owner's NATS, a requester on the
	// sender's, so every request crosses the route between them.
	ncA, err := nats.Connect(c.Node(sender).NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	ncB, err := nats.Connect(c.Node(owner).NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer ncB.Close()
	reply := make([]byte, 64)
	sub, err := ncB.Subscribe("bench12.raw", func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := ncB.Flush(); err != nil {
		t.Fatal(err)
	}
	rawBody := make([]byte, bodySize)
	clustertest.Eventually(t, 10*time.Second, "the responder's interest crossed the route", func() error {
		_, err := ncA.Request("bench12.raw", rawBody, time.Second)
		return err
	})

	// The link's floor: a bare request from here to the owner's forward
	// link, which its handler refuses at once (the bytes are not a
	// forwarded command): one TCP round trip and the handler's dispatch.
	var lc *link.Client
	linkAddr := ""
	if p, ok := benchLinkPorts[c.Node(owner).ID]; ok {
		u, err := url.Parse(c.Node(owner).HTTPURL())
		if err != nil {
			t.Fatal(err)
		}
		linkAddr = net.JoinHostPort(u.Hostname(), strconv.Itoa(p))
		lc = link.NewClient(link.ClientConfig{})
		defer lc.Close()
	}
	linkBody := make([]byte, bodySize) // zeros: not a protobuf message

	// Pad the idempotency key so that the JSON body is bodySize bytes.
	probe := &troupev1.SendRequest{Kind: "account", Id: ids[0], Type: "Deposit", IdempotencyKey: "k-000000-o-"}
	probe.Payload, _ = structpb.NewStruct(map[string]any{"amount": 1})
	pb, _ := protojson.Marshal(probe)
	pad := strings.Repeat("p", max(0, bodySize-len(pb)))
	key := func(i int, who string) string { return fmt.Sprintf("k-%06d-%s-%s", i, who, pad) }

	// Two phases. Back to back: each request right after the previous
	// answer, while the nodes still do the previous command's background
	// work (replication, every node's read models), in blocks of one kind
	// (25 requests to the owner, then 25 forwarded, ...), as the
	// peer times its local calls in one loop and its remote calls in
	// another: each timed request follows one of its own kind. (Rotating
	// the kinds round by round put a command to the owner right before
	// three forwards in four and before no command to the owner: the
	// forwards paid for that command's background work on the owner and
	// the commands to the owner never did.) The first request of a block
	// follows another kind and is not recorded. Paced: a pause after each
	// request, so each is timed on nodes that have finished that work,
	// as a lightly loaded cluster would be; there the order does not
	// matter, and the kinds rotate round by round.
	const block = 25
	for _, phase := range []struct {
		name  string
		pause time.Duration
		base  int // keys apart from the other phases' keys
	}{{"back to back", 0, 0}, {"paced (5 ms after each request)", 5 * time.Millisecond, 2 * (rounds + warm)}} {
		var own, fwd, raw, rawLink []time.Duration
		// stepsOf returns round i's requests, one of each kind, in a
		// fixed order; record says whether they record their times.
		stepsOf := func(ctx context.Context, i int, record bool) []func() {
			id := ids[i%len(ids)]
			// timed runs one request, and records how long it took.
			timed := func(what string, into *[]time.Duration, req func() error) func() {
				return func() {
					t0 := time.Now()
					if err := req(); err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if record {
						*into = append(*into, time.Since(t0))
					}
				}
			}
			steps := []func(){
				timed("to the owner", &own, func() error { return deposit(ctx, cls[1], id, 1, "", key(phase.base+i, "o")) }),
				timed("forwarded", &fwd, func() error { return deposit(ctx, cls[0], id, 1, "", key(phase.base+i, "f")) }),
				timed("raw request", &raw, func() error {
					_, err := ncA.Request("bench12.raw", rawBody, 5*time.Second)
					return err
				}),
			}
			if lc != nil {
				steps = append(steps, timed("bare link request", &rawLink, func() error {
					b, err := lc.Call(ctx, linkAddr, linkBody)
					if err == nil && !strings.Contains(string(b), "did not decode") {
						err = fmt.Errorf("unexpected answer %q", b)
					}
					return err
				}))
			}
			return steps
		}
		// run runs round i, the kinds rotated so that none always runs
		// first, with the phase's pause after each request.
		run := func(i int, record bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			steps := stepsOf(ctx, i, record)
			for j := range steps {
				steps[(i+j)%len(steps)]()
				if phase.pause > 0 {
					time.Sleep(phase.pause)
				}
			}
		}
		// measure runs the measured rounds: as run does when paced; back
		// to back, in blocks of one kind.
		measure := func() {
			if phase.pause > 0 {
				for i := range rounds {
					run(i, true)
				}
				return
			}
			for b := 0; b*block < rounds; b++ {
				for k := range len(stepsOf(context.Background(), 0, false)) {
					for j := range block {
						i := b*block + j
						if i >= rounds {
							break
						}
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						steps := stepsOf(ctx, i, j > 0)
						steps[(k+b)%len(steps)]()
						cancel()
					}
				}
			}
		}
		for i := range warm {
			run(rounds+i, false) // keys apart from the measured rounds' keys
		}
		load0 := loadavg()
		t0 := time.Now()
		measure()
		took := time.Since(t0)
		for _, ds := range [][]time.Duration{own, fwd, raw, rawLink} {
			slices.Sort(ds)
		}
		add50, add99 := pct(fwd, .5)-pct(own, .5), pct(fwd, .99)-pct(own, .99)
		t.Logf("%s: load average before/after: %s / %s; %d shards; %d rounds in %s; JSON body %d B, raw payload %d B",
			phase.name, load0, loadavg(), shards, rounds, took.Round(time.Millisecond), len(pb)+len(pad), bodySize)
		rows := []struct {
			name string
			ds   []time.Duration
		}{{"to the owner (node 1)", own}, {"forwarded (node 0 -> 1)", fwd}, {"raw NATS request 0 -> 1", raw}}
		if len(rawLink) > 0 {
			rows = append(rows, struct {
				name string
				ds   []time.Duration
			}{"bare link request -> 1", rawLink})
		}
		for _, r := range rows {
			t.Logf("%s: %-26s p50 %7.1f us  p90 %7.1f us  p99 %7.1f us  max %8.1f us", phase.name, r.name,
				us(pct(r.ds, .5)), us(pct(r.ds, .9)), us(pct(r.ds, .99)), us(r.ds[len(r.ds)-1]))
		}
		ratio := float64(add50) / float64(pct(raw, .5))
		t.Logf("%s: forward adds p50 %.1f us, p99 %.1f us; added p50 / raw p50 = %.2f (goal <= 1.5: %s)",
			phase.name, us(add50), us(add99), ratio, verdict(ratio <= 1.5))
	}
	l, nn := forwardCounts(t, hc, c.Node(sender).HTTPURL())
	t.Logf("forward attempts of the sender: %d over the direct link, %d over NATS", l, nn)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// loadResult is one closed-loop load run.
type loadResult struct {
	ok, failed int64
	took       time.Duration
	lats       []time.Duration
	codes      map[string]int64
	first      map[string]string // one message per code
}

func (r loadResult) String() string {
	slices.Sort(r.lats)
	return fmt.Sprintf("%6.0f commands/s (%d ok, %d failed %v in %s)  p50 %6.2f ms  p99 %6.2f ms",
		float64(r.ok)/r.took.Seconds(), r.ok, r.failed, r.codes, r.took.Round(time.Millisecond),
		us(pct(r.lats, .5))/1000, us(pct(r.lats, .99))/1000)
}

// runLoad runs callers closed-loop callers for dur after warm: each sends
// a Deposit of 1 (no idempotency key, as `troupe bench` does) to the
// node and account pick chooses.
func runLoad(callers int, warm, dur time.Duration, pick func(caller int, r *mrand.Rand) (troupev1connect.CommandServiceClient, string)) loadResult {
	var (
		wg      sync.WaitGroup
		measure atomic.Bool
		stop    atomic.Bool
		mu      sync.Mutex
		res     = loadResult{codes: map[string]int64{}, first: map[string]string{}}
	)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(g), 12))
			var lats []time.Duration
			var ok, failed int64
			codes := map[string]int64{}
			first := map[string]string{}
			for !stop.Load() {
				cl, id := pick(g, r)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := deposit(ctx, cl, id, 1, "", "")
				d := time.Since(t0)
				cancel()
				if !measure.Load() {
					continue
				}
				if err != nil {
					failed++
					code := connect.CodeOf(err).String()
					codes[code]++
					if _, ok := first[code]; !ok {
						first[code] = err.Error()
					}
					continue
				}
				ok++
				lats = append(lats, d)
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.lats = append(res.lats, lats...)
			for k, v := range codes {
				res.codes[k] += v
			}
			for k, v := range first {
				res.first[k] = v
			}
			mu.Unlock()
		}()
	}
	time.Sleep(warm) // the warm-up's length is the measure, not a synchronisation
	measure.Store(true)
	t0 := time.Now()
	time.Sleep(dur)
	stop.Store(true)
	res.took = time.Since(t0)
	wg.Wait()
	return res
}

// TestClusterBenchThroughput: 64 closed-loop callers sending Deposit
// commands, against one single node (Badger journal) and against a
// three-node cluster (JetStream R3 journal) with the callers spread over
// its nodes: to random accounts (two in three forwarded), only to
// accounts the receiving node owns, and only to accounts it does not own
// (every command forwarded).
func TestClusterBenchThroughput(t *testing.T) {
	skipUnlessLongBench(t)
	const (
		callers  = 64
		accounts = 1536
		warm     = 3 * time.Second
		dur      = 20 * time.Second
	)
	shards := benchShards(t)
	ids := make([]string, accounts)
	for i := range ids {
		ids[i] = fmt.Sprintf("tp-%d", i)
	}
	t.Run("single node", func(t *testing.T) {
		c := clustertest.Start(t, clustertest.Options{Nodes: 1, Binary: troupeBin, Args: clustertest.SingleNodeArgs})
		cls := jsonClients(benchHTTP(c), []string{c.Node(0).HTTPURL()})
		openAccounts(t, cls, ids)
		load0 := loadavg()
		r := runLoad(callers, warm, dur, func(_ int, rnd *mrand.Rand) (troupev1connect.CommandServiceClient, string) {
			return cls[0], ids[rnd.IntN(len(ids))]
		})
		t.Logf("load average before/after: %s / %s", load0, loadavg())
		t.Logf("single node, %d callers, random accounts: %s", callers, r)
		if r.ok == 0 {
			t.Fatal("no command succeeded")
		}
	})
	t.Run("three nodes", func(t *testing.T) {
		c := startBenchCluster(t, 3, shards)
		owners := ownersOf(t, c, []int{0, 1, 2})
		cls := jsonClients(benchHTTP(c), urls(c))
		openAccounts(t, cls, ids)
		byOwner := make([][]string, 3)
		notOwned := make([][]string, 3)
		for _, id := range ids {
			o := owners[actors.ShardOf("account", id, shards)]
			byOwner[o] = append(byOwner[o], id)
			for n := range 3 {
				if n != o {
					notOwned[n] = append(notOwned[n], id)
				}
			}
		}
		runs := []struct {
			name string
			pick func(int, *mrand.Rand) (troupev1connect.CommandServiceClient, string)
		}{
			{"random accounts (2/3 forwarded)", func(g int, rnd *mrand.Rand) (troupev1connect.CommandServiceClient, string) {
				return cls[g%3], ids[rnd.IntN(len(ids))]
			}},
			{"each to its owner (none forwarded)", func(g int, rnd *mrand.Rand) (troupev1connect.CommandServiceClient, string) {
				own := byOwner[g%3]
				if len(own) == 0 { // a node with no shard: send to another's
					own = ids
				}
				return cls[g%3], own[rnd.IntN(len(own))]
			}},
			{"each to a non-owner (all forwarded)", func(g int, rnd *mrand.Rand) (troupev1connect.CommandServiceClient, string) {
				return cls[g%3], notOwned[g%3][rnd.IntN(len(notOwned[g%3]))]
			}},
		}
		t.Logf("%d shards; shards per node: %d %d %d", shards, countOwned(owners, 0), countOwned(owners, 1), countOwned(owners, 2))
		for _, run := range runs {
			load0 := loadavg()
			from := logSizes(c)
			r := runLoad(callers, warm, dur, run.pick)
			t.Logf("load average before/after: %s / %s", load0, loadavg())
			t.Logf("3 nodes, %d callers, %s: %s", callers, run.name, r)
			for code, msg := range r.first {
				t.Logf("  %s, e.g.: %s", code, msg)
			}
			if m := notOpenRE.FindStringSubmatch(r.first["failed_precondition"]); m != nil {
				// An account openAccounts saw opened was refused as not
				// open: is its Open in the log, and what does each node's
				// read model say?
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				for i := range c.Nodes() {
					evs, err := linear.ReadStream(ctx, benchHTTP(c), c.Node(i).HTTPURL(), "account/"+m[1])
					var types []string
					for _, e := range evs {
						types = append(types, fmt.Sprintf("%d:%s", e.Sequence, e.Type))
					}
					t.Logf("  account/%s as node %d reads it: %v (err %v)", m[1], i, types, err)
				}
				cancel()
				t.Errorf("account %s was opened (acknowledged) and later refused as not open", m[1])
			}
			if r.failed > 0 {
				logProblems(t, c, from)
			}
			if r.ok == 0 {
				t.Fatalf("%s: no command succeeded", run.name)
			}
		}
	})
}

// logSizes returns the length of each node's log, for logProblems.
func logSizes(c *clustertest.Cluster) []int {
	var out []int
	for _, n := range c.Nodes() {
		out = append(out, len(n.Log()))
	}
	return out
}

// logProblems logs the warnings and errors each node logged after from
// (logSizes), at most five per node, to tell what failed commands met.
func logProblems(t *testing.T, c *clustertest.Cluster, from []int) {
	t.Helper()
	for i, n := range c.Nodes() {
		var lines []string
		log := n.Log()
		for l := range strings.SplitSeq(log[min(from[i], len(log)):], "\n") {
			if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
				lines = append(lines, l)
			}
		}
		t.Logf("%s: %d warnings and errors in its log", n.ID, len(lines))
		for _, l := range lines[:min(len(lines), 5)] {
			t.Logf("  %.400s", l)
		}
	}
}

func countOwned(owners map[int]int, node int) int {
	n := 0
	for _, o := range owners {
		if o == node {
			n++
		}
	}
	return n
}

// notOpenRE finds the account a "not open" refusal names.
var notOpenRE = regexp.MustCompile(`account (\S+) is not open`)

// takeoverLine matches the log lines that tell how a takeover went.
var takeoverLine = regexp.MustCompile(`(?i)acquir|took over|taking over|member (failed|left)|dead|lease|leader|not ready|fenc|unavailable`)

// failCall is one call of the failover load; pointer-free, many of them.
type failCall struct {
	account    int32
	start, end time.Duration // since the load began
	ok         bool
	ref        int64
}

// TestClusterBenchFailover: 64 callers send Deposit commands through node
// 0 (like the peer's driver member) to accounts on every node; node 1 is
// killed (SIGKILL). It measures when node 1's shards are served again (the
// shards API, as TestShardedClusterSurvivesKills does), when each of node
// 1's accounts took a command again (the first successful call started
// after the kill), how many calls failed, and whether any acknowledged
// deposit is missing from its account's stream afterwards.
func TestClusterBenchFailover(t *testing.T) {
	skipUnlessLongBench(t)
	const (
		callers  = 64
		accounts = 256
		victim   = 1
	)
	trials := 5
	shards := benchShards(t)
	var serveAgain, clientP50, clientMax []time.Duration
	for trial := range trials {
		t.Run(fmt.Sprintf("trial %d", trial+1), func(t *testing.T) {
			c := startBenchCluster(t, 3, shards)
			owners := ownersOf(t, c, []int{0, 1, 2})
			ids := make([]string, accounts)
			onVictim := map[int32]bool{}
			for i := range ids {
				ids[i] = fmt.Sprintf("fo-%d", i)
				if owners[actors.ShardOf("account", ids[i], shards)] == victim {
					onVictim[int32(i)] = true
				}
			}
			hc := benchHTTP(c)
			cls := jsonClients(hc, urls(c))
			openAccounts(t, cls[:1], ids)

			var (
				wg    sync.WaitGroup
				stop  atomic.Bool
				mu    sync.Mutex
				calls []failCall
				ref   atomic.Int64
				// killNs is the kill's time since base (0: not yet);
				// recovered[a] is set by the first successful call to
				// account a that started after the kill.
				killNs    atomic.Int64
				recovered = make([]atomic.Bool, accounts)
			)
			victimShards := countOwned(owners, victim)
			base := time.Now()
			defer func() { stop.Store(true); wg.Wait() }() // also when a wait below fails the test
			for g := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine []failCall
					for k := g; !stop.Load(); k += callers {
						a := k % accounts
						n := ref.Add(1)
						r := "r" + strconv.FormatInt(n, 10)
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						t0 := time.Now()
						err := deposit(ctx, cls[0], ids[a], 1, r, r)
						t1 := time.Now()
						cancel()
						mine = append(mine, failCall{account: int32(a), start: t0.Sub(base), end: t1.Sub(base), ok: err == nil, ref: n})
						if k := killNs.Load(); err == nil && k > 0 && t0.Sub(base) >= time.Duration(k) {
							recovered[a].Store(true)
						}
						if err != nil && ctx.Err() == nil {
							// a fast failure: do not spin
							time.Sleep(5 * time.Millisecond)
						}
					}
					mu.Lock()
					calls = append(calls, mine...)
					mu.Unlock()
				}()
			}
			time.Sleep(3 * time.Second) // load before the kill: a measure of time, not a synchronisation
			load0 := loadavg()
			t0 := time.Now()
			killAt := t0.Sub(base)
			killNs.Store(int64(killAt))
			c.Node(victim).Kill()
			served := waitServedN(t, c, []int{0, 2}, shards, t0, 30*time.Second)
			// Load goes on until every account of the victim took a
			// command again (a caller may wait out a 5 s timeout on each
			// of its accounts), bounded like the peer's 30 s.
			clustertest.Eventually(t, 30*time.Second, "every account of the victim takes commands again", func() error {
				n := 0
				for a := range accounts {
					if onVictim[int32(a)] && !recovered[a].Load() {
						n++
					}
				}
				if n > 0 {
					return fmt.Errorf("%d of the victim's %d accounts not yet", n, len(onVictim))
				}
				return nil
			})
			time.Sleep(2 * time.Second) // a little load after recovery: a measure of time, not a synchronisation
			stop.Store(true)
			wg.Wait()

			// Client view: per victim account, the end of its first
			// successful call started after the kill. A call counts as
			// after the kill if it ended after it.
			first := map[int32]time.Duration{}
			var okBefore, failedAfter, failedAfterVictim, okAfter int
			for _, cl := range calls {
				after := cl.end > killAt
				switch {
				case !after && cl.ok:
					okBefore++
				case after && !cl.ok:
					failedAfter++
					if onVictim[cl.account] {
						failedAfterVictim++
					}
				case after && cl.ok:
					okAfter++
					if cl.start >= killAt && onVictim[cl.account] {
						if f, seen := first[cl.account]; !seen || cl.end-killAt < f {
							first[cl.account] = cl.end - killAt
						}
					}
				}
			}
			var rec []time.Duration
			for _, d := range first {
				rec = append(rec, d)
			}
			slices.Sort(rec)
			if len(rec) != len(onVictim) {
				t.Errorf("%d of the victim's %d accounts took no command after the kill", len(onVictim)-len(rec), len(onVictim))
			}

			// State: every acknowledged deposit is in its stream, once.
			owners = ownersOf(t, c, []int{0, 2})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			applied := map[string]int{}
			for _, id := range ids {
				o := owners[actors.ShardOf("account", id, shards)]
				evs, err := linear.ReadStream(ctx, hc, c.Node(o).HTTPURL(), "account/"+id)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					if e.Type != "Deposited" {
						continue
					}
					var p struct {
						Ref string `json:"ref"`
					}
					if err := json.Unmarshal(e.Payload, &p); err != nil {
						t.Fatal(err)
					}
					applied[p.Ref]++
				}
			}
			var acked, lost, doubled int
			for _, cl := range calls {
				if !cl.ok {
					continue
				}
				acked++
				switch n := applied["r"+strconv.FormatInt(cl.ref, 10)]; {
				case n == 0:
					lost++
				case n > 1:
					doubled++
				}
			}
			t.Logf("load average at the kill / after: %s / %s; %d shards, %d of them on the victim; %d of %d accounts on the victim",
				load0, loadavg(), shards, victimShards, len(onVictim), accounts)
			t.Logf("calls: %d ok before the kill, %d ok after, %d failed after (%d to the victim's accounts)", okBefore, okAfter, failedAfter, failedAfterVictim)
			t.Logf("its shards served again after %s (shards API); its accounts took commands again after p50 %s, max %s (client)",
				served.Round(time.Millisecond), pct(rec, .5).Round(time.Millisecond), pct(rec, 1).Round(time.Millisecond))
			t.Logf("state: %d acknowledged deposits, %d lost, %d applied twice", acked, lost, doubled)
			if served > 5*time.Second {
				// A slow takeover: what the survivors said about it.
				for _, i := range []int{0, 2} {
					var lines []string
					for l := range strings.Lines(c.Node(i).Log()) {
						if takeoverLine.MatchString(l) {
							lines = append(lines, strings.TrimSpace(l))
						}
					}
					t.Logf("node %d on the takeover (%d lines):\n%s", i, len(lines), strings.Join(lines[max(0, len(lines)-40):], "\n"))
				}
			}
			if lost > 0 || doubled > 0 {
				t.Errorf("%d acknowledged deposits lost, %d applied twice", lost, doubled)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatal("reading the streams took more than a minute")
			}
			serveAgain = append(serveAgain, served)
			clientP50 = append(clientP50, pct(rec, .5))
			clientMax = append(clientMax, pct(rec, 1))
		})
	}
	if len(serveAgain) == 0 {
		return
	}
	slices.Sort(serveAgain)
	slices.Sort(clientP50)
	slices.Sort(clientMax)
	t.Logf("over %d kills: shards served again median %s (min %s, max %s); client p50 median %s; client max median %s",
		len(serveAgain), serveAgain[len(serveAgain)/2].Round(time.Millisecond), serveAgain[0].Round(time.Millisecond),
		serveAgain[len(serveAgain)-1].Round(time.Millisecond), clientP50[len(clientP50)/2].Round(time.Millisecond),
		clientMax[len(clientMax)/2].Round(time.Millisecond))
}
