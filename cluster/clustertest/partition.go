package clustertest

import (
	"fmt"
	"sort"
	"strconv"
)

// clientIdx stands for the client namespace in a cut.
const clientIdx = -1

// cutPref is the priority of the cut rules: before the local table, which
// the topology moved to 100.
const cutPref = "10"

// cut is one directed link cut. The rule lives in the receiver's namespace
// and drops, on arrival, packets from the sender's address: silently, as a
// lost link would (no ICMP, no local error at the sender), and for
// established connections as well as new ones (a rule change invalidates
// every cached route).
type cut struct {
	from, to int // node indexes, or clientIdx
	// full drops every packet; otherwise only packets addressed to the
	// receiver's listening ports (every port below its ephemeral range),
	// so that the receiver's own connections to the sender still work.
	full bool
}

func (k cut) String() string {
	name := func(i int) string {
		if i == clientIdx {
			return "client"
		}
		return "node " + strconv.Itoa(i)
	}
	kind := "one-way"
	if k.full {
		kind = "full"
	}
	return fmt.Sprintf("%s cut %s -> %s", kind, name(k.from), name(k.to))
}

// Cut drops packets from node `from` to node `to`: one-way. Precisely,
// every packet `from` sends to a listening port of `to` (any port below
// to's ephemeral range, 32768) is dropped, silently, on new and existing
// connections alike; packets that answer connections `to` opened pass. So
// UDP gossip from `from` to `to` is lost while `to`'s gossip reaches
// `from`; `from` cannot connect to `to`'s servers (HTTP, NATS, routes) and
// its existing connections to them stall, while `to` can still connect to
// `from`'s. A strict packet-level one-way cut would break every TCP
// connection in both directions (no handshake completes), which CutBoth
// already expresses. Needs Options.Namespaces; otherwise the test fails.
func (c *Cluster) Cut(from, to int) {
	c.t.Helper()
	c.mustPartition("Cut")
	c.checkPair(from, to)
	c.addCut(cut{from: from, to: to})
}

// CutBoth drops every packet between nodes a and b, both ways.
func (c *Cluster) CutBoth(a, b int) {
	c.t.Helper()
	c.mustPartition("CutBoth")
	c.checkPair(a, b)
	c.addCut(cut{from: a, to: b, full: true})
	c.addCut(cut{from: b, to: a, full: true})
}

// Isolate cuts node i from every other node, both ways. The client
// namespace keeps its access to i (see IsolateFromClient).
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	c.mustPartition("Isolate")
	c.checkNode(i)
	for _, n := range c.Nodes() {
		if n.Index != i {
			c.addCut(cut{from: i, to: n.Index, full: true})
			c.addCut(cut{from: n.Index, to: i, full: true})
		}
	}
}

// IsolateFromClient cuts node i from the client namespace, both ways:
// HTTPClient, Dial and CLI no longer reach it.
func (c *Cluster) IsolateFromClient(i int) {
	c.t.Helper()
	c.mustPartition("IsolateFromClient")
	c.checkNode(i)
	c.addCut(cut{from: i, to: clientIdx, full: true})
	c.addCut(cut{from: clientIdx, to: i, full: true})
}

// Partition replaces every cut with groups: nodes talk only within their
// group; a node in no group is alone. The client reaches every node.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	c.mustPartition("Partition")
	group := map[int]int{}
	for g, members := range groups {
		for _, i := range members {
			c.checkNode(i)
			if prev, ok := group[i]; ok {
				c.t.Fatalf("clustertest: Partition: node %d is in groups %d and %d", i, prev, g)
			}
			group[i] = g
		}
	}
	nodes := c.Nodes()
	for _, n := range nodes {
		if _, ok := group[n.Index]; !ok {
			group[n.Index] = len(groups) + n.Index // alone
		}
	}
	c.Heal()
	for _, a := range nodes {
		for _, b := range nodes {
			if a.Index != b.Index && group[a.Index] != group[b.Index] {
				c.addCut(cut{from: a.Index, to: b.Index, full: true})
			}
		}
	}
}

// Heal removes every cut.
func (c *Cluster) Heal() {
	c.t.Helper()
	c.mustPartition("Heal")
	c.mu.Lock()
	cuts := make([]cut, 0, len(c.cuts))
	for k := range c.cuts {
		cuts = append(cuts, k)
	}
	c.mu.Unlock()
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].String() < cuts[j].String() })
	for _, k := range cuts {
		ns, spec, err := c.rule(k)
		if err == nil {
			err = ipCmd(append([]string{"-n", ns, "rule", "del"}, spec...)...)
		}
		if err != nil {
			c.t.Fatalf("clustertest: heal %s: %v", k, err)
		}
		c.mu.Lock()
		delete(c.cuts, k)
		c.mu.Unlock()
	}
}

// Cuts lists the cuts in force, for test messages.
func (c *Cluster) Cuts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.cuts {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

func (c *Cluster) addCut(k cut) {
	c.t.Helper()
	c.mu.Lock()
	done := c.cuts[k]
	c.mu.Unlock()
	if done {
		return
	}
	ns, spec, err := c.rule(k)
	if err == nil {
		err = ipCmd(append([]string{"-n", ns, "rule", "add"}, spec...)...)
	}
	if err != nil {
		c.t.Fatalf("clustertest: %s: %v", k, err)
	}
	c.mu.Lock()
	c.cuts[k] = true
	c.mu.Unlock()
}

// rule returns the namespace and `ip rule` selector and action of a cut.
func (c *Cluster) rule(k cut) (ns string, spec []string, err error) {
	fromIP, _ := c.endpoint(k.from)
	_, toNS := c.endpoint(k.to)
	spec = []string{"pref", cutPref, "from", fromIP + "/32", "iif", "eth0"}
	if !k.full {
		low, err := c.ephemeralLow(toNS)
		if err != nil {
			return "", nil, err
		}
		spec = append(spec, "dport", "1-"+strconv.Itoa(low-1))
	}
	return toNS, append(spec, "blackhole"), nil
}

// ephemeralLow is the lowest ephemeral port of namespace ns, read once.
func (c *Cluster) ephemeralLow(ns string) (int, error) {
	c.mu.Lock()
	low, ok := c.eph[ns]
	c.mu.Unlock()
	if ok {
		return low, nil
	}
	low, err := ephemeralLow(ns)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.eph[ns] = low
	c.mu.Unlock()
	return low, nil
}

func (c *Cluster) endpoint(i int) (ip, ns string) {
	if i == clientIdx {
		return c.tp.clientIP(), c.tp.client
	}
	n := c.Node(i)
	return n.IP, n.Netns
}

func (c *Cluster) mustPartition(op string) {
	c.t.Helper()
	if c.tp == nil {
		c.t.Fatalf("clustertest: %s needs a cluster with Options.Namespaces", op)
	}
}

func (c *Cluster) checkNode(i int) {
	c.t.Helper()
	if n := len(c.Nodes()); i < 0 || i >= n {
		c.t.Fatalf("clustertest: no node %d (cluster of %d)", i, n)
	}
}

func (c *Cluster) checkPair(a, b int) {
	c.t.Helper()
	c.checkNode(a)
	c.checkNode(b)
	if a == b {
		c.t.Fatalf("clustertest: cannot cut node %d from itself", a)
	}
}
