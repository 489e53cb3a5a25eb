package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus"
	"github.com/troupe-dev/troupe/cluster/membership"
)

// Tags a node gossips about itself (serf tags: 512 bytes in all, so the
// keys are short).
const (
	tagAPI     = "api"   // API base URL
	tagNATS    = "nats"  // NATS client URL
	tagRoute   = "route" // NATS route address host:port
	tagRoles   = "roles" // comma-separated roles
	tagVersion = "v"     // binary version
	tagCluster = "cid"   // cluster id ("" until the node knows it)
	tagSecret  = "rsec"  // fingerprint of the NATS route password
)

// Roles a node can carry.
const (
	// RoleShards: the node may own shards (serve entities).
	RoleShards = "shards"
	// RoleJetStream: the node's NATS server runs JetStream (stores the
	// replicated streams and takes part in their Raft groups).
	RoleJetStream = "jetstream"
)

// clusterState is the cluster half of a node: membership and what the node
// derives from it. Its methods are called by the membership's notifier
// goroutine and by API handlers.
type clusterState struct {
	n   *Node
	mem *membership.Membership

	mu        sync.Mutex
	clusterID string
	bus       *bus.Bus // set once NATS runs; routes follow membership
	routes    []string
	ready     bool
	reason    string
	leaving   bool
	// links are the live members' forward link addresses (link.go);
	// linksMu orders their updates.
	links   atomic.Pointer[linkAddrs]
	linksMu sync.Mutex
}

// clustered reports whether the node runs in a cluster.
func (cfg Config) clustered() bool { return cfg.Gossip != "" }

// hasRole reports whether the node carries role.
func (cfg Config) hasRole(role string) bool { return slices.Contains(cfg.Roles, role) }

// startMembership starts serf, joins the seeds and settles the cluster id.
// It runs before NATS, whose cluster name and routes come from it.
func (n *Node) startMembership(ctx context.Context) error {
	cfg := n.cfg
	n.newLinkClient()
	cs := &clusterState{n: n, clusterID: n.ident.ClusterID, reason: "starting"}
	mem, err := membership.New(membership.Config{
		NodeID: n.ident.NodeID, BindAddr: cfg.Gossip, AdvertiseAddr: cfg.GossipAdvertise,
		Key: cfg.GossipKey, Tags: n.tags(cs.clusterID, ""),
		ReapFailedAfter: cfg.ReapFailedAfter,
		OnChange:        cs.membersChanged,
		Logger:          n.log,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := mem.Start(ctx); err != nil {
		return fmt.Errorf("node: gossip: %w", err)
	}
	cs.mem = mem
	n.cluster = cs
	n.onStop("membership", func(ctx context.Context) error {
		// Leave before closing, also when Start fails (a refused node):
		// the others see it left, not failed. Bounded: Close follows.
		if ctx.Err() == nil {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = mem.Leave(lctx)
			cancel()
		}
		return mem.Close()
	})
	if len(cfg.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
		joined, err := mem.Join(jctx, cfg.Join, 0)
		cancel()
		if err != nil {
			return fmt.Errorf("node: join %s: %w", strings.Join(cfg.Join, ","), err)
		}
		n.log.Info("joined the cluster", "seeds", strings.Join(cfg.Join, ","), "contacted", joined)
	} else {
		n.log.Info("founding a cluster: no seeds to join (--join)", "gossip", mem.Addr())
	}
	id, err := n.settleClusterID(ctx, cs)
	if err != nil {
		return err
	}
	cs.mu.Lock()
	cs.clusterID = id
	cs.mu.Unlock()
	if n.ident.ClusterID != id {
		n.ident.ClusterID = id
		if err := saveIdentity(cfg.DataDir, n.ident); err != nil {
			return err
		}
	}
	return mem.SetTags(n.tags(id, ""))
}

// settleWindow is how long the membership of new nodes must stay the same
// before the one with the smallest id names their cluster: nodes started
// together find each other through their seeds within it.
const settleWindow = time.Second

// settleClusterID decides which cluster this node is in. A data dir that
// has been in a cluster keeps its id and refuses another cluster; a new
// node adopts the id its seeds carry; the founding node (no seeds) makes
// one up, and so does, among new nodes that found only each other, the one
// with the smallest id once their membership has been stable for
// settleWindow (the others wait for its id).
func (n *Node) settleClusterID(ctx context.Context, cs *clusterState) (string, error) {
	self := n.ident.NodeID
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	var (
		view        string
		stableSince time.Time
	)
	for {
		others := map[string][]string{} // cluster id -> members
		smallest := true
		var alive []string
		for _, m := range cs.mem.Members() {
			if m.State != membership.Alive && m.State != membership.Suspect {
				continue
			}
			alive = append(alive, m.ID)
			if m.ID == self {
				continue
			}
			if id := m.Tags[tagCluster]; id != "" {
				others[id] = append(others[id], m.ID)
			} else if m.ID < self {
				smallest = false
			}
		}
		if v := strings.Join(alive, ","); v != view {
			view, stableSince = v, time.Now()
		}
		for _, m := range cs.mem.Members() {
			if m.ID == self || m.State != membership.Alive {
				continue
			}
			if fp, mine := m.Tags[tagSecret], secretFingerprint(n.cfg.ClusterSecret); fp != mine {
				return "", fmt.Errorf("node: the NATS route credentials (--cluster-secret, or the one derived from --gossip-key) differ from those of member %s: refusing to join; every node needs the same", m.ID)
			}
		}
		stored := n.ident.ClusterID
		for id, ms := range others {
			if stored != "" && id != stored {
				return "", fmt.Errorf("node: this data dir (%s) belongs to cluster %s, but %s belong to cluster %s: refusing to join another cluster's members; use a fresh data dir to join it", n.cfg.DataDir, stored, strings.Join(ms, ","), id)
			}
		}
		switch {
		case stored != "":
			return stored, nil
		case len(others) > 1:
			var ids []string
			for id := range others {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			return "", fmt.Errorf("node: the seeds belong to different clusters (%s): refusing to join", strings.Join(ids, ", "))
		case len(others) == 1:
			for id := range others {
				n.log.Info("joining cluster", "cluster", id)
				return id, nil
			}
		case len(n.cfg.Join) == 0 || (smallest && time.Since(stableSince) >= settleWindow):
			id := randomHex(8)
			n.log.Info("new cluster", "cluster", id, "members", view)
			return id, nil
		}
		// Another new node with a smaller id names the cluster.
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("node: no member announced a cluster id within %s", n.cfg.JoinTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tags are the node's gossiped metadata.
func (n *Node) tags(clusterID, route string) map[string]string {
	t := map[string]string{
		tagSecret:  secretFingerprint(n.cfg.ClusterSecret),
		tagRoles:   strings.Join(n.cfg.Roles, ","),
		tagVersion: n.cfg.Version,
		tagCluster: clusterID,
		tagRoute:   route,
	}
	if n.ln != nil {
		t[tagAPI] = "http://" + n.advertised(n.ln.Addr().String())
	}
	if n.bus != nil {
		t[tagNATS] = n.bus.ClientURL()
	}
	if n.shardsOn.Load() {
		t[tagShards] = "1"
	}
	if n.linkSrv != nil {
		t[tagLink] = n.advertised(n.linkSrv.Addr().String())
	}
	return t
}

// advertised replaces an unspecified listen host (0.0.0.0, ::) with the
// advertised gossip host (or the gossip host), so that other nodes can
// dial the address.
func (n *Node) advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return addr
	}
	// The host the others reach this node at: the advertised gossip
	// host when there is one (a node bound to 0.0.0.0 behind a name),
	// else the gossip host.
	gossip := n.cfg.Gossip
	if n.cfg.GossipAdvertise != "" {
		gossip = n.cfg.GossipAdvertise
	}
	ghost, _, _ := net.SplitHostPort(gossip)
	return net.JoinHostPort(ghost, port)
}

// busCluster is the NATS cluster configuration: the cluster name from the
// cluster id, the routes from the members' tags.
func (n *Node) busCluster() bus.Cluster {
	cs := n.cluster
	host, _, _ := net.SplitHostPort(n.cfg.Gossip)
	c := bus.Cluster{
		Name: "troupe-" + cs.clusterID,
		Host: host, Port: n.cfg.ClusterPort,
		User: "troupe-route", Password: n.cfg.ClusterSecret,
	}
	if c.Password == "" {
		c.User = ""
	}
	c.Routes = cs.routeAddrs(net.JoinHostPort(host, strconv.Itoa(n.cfg.ClusterPort)))
	return c
}

// routeAddrs lists the route addresses of the live members, self (so
// that a lone founding node can start JetStream clustered) included.
func (cs *clusterState) routeAddrs(self string) []string {
	out := []string{self}
	for _, m := range cs.mem.Members() {
		if m.ID == cs.n.ident.NodeID || m.Tags[tagCluster] != cs.clusterID {
			continue
		}
		if m.State != membership.Alive && m.State != membership.Suspect {
			// Left or failed: nobody to dial. A failed node that comes
			// back is alive again, and gets its route back.
			continue
		}
		if r := m.Tags[tagRoute]; r != "" {
			out = append(out, r)
		}
	}
	sort.Strings(out[1:])
	return out
}

// attachBus is called once NATS runs: from now on its routes follow
// membership.
func (cs *clusterState) attachBus(b *bus.Bus) {
	cs.mu.Lock()
	cs.bus = b
	cs.mu.Unlock()
	cs.membersChanged()
}

// leave leaves the cluster gracefully: the others see this node "left",
// never "failed".
func (cs *clusterState) leave(ctx context.Context) error {
	cs.mu.Lock()
	cs.ready, cs.reason, cs.leaving = false, "leaving the cluster", true
	cs.mu.Unlock()
	return cs.mem.Leave(ctx)
}

// clusterStarted is called once the API listens: the node announces its
// addresses, and readiness is checked from now on.
func (n *Node) clusterStarted() error {
	cs := n.cluster
	route := n.advertised(n.bus.RouteAddr())
	if err := cs.mem.SetTags(n.tags(cs.clusterID, route)); err != nil {
		return fmt.Errorf("node: gossip tags: %w", err)
	}
	cs.membersChanged()
	// Stopping cancels a check in flight: once the node has left, its
	// routes are gone and the check would wait out its timeout.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			cs.checkReady(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	n.onStop("cluster readiness", func(context.Context) error {
		stop()
		<-done
		return nil
	})
	return nil
}

// membersChanged runs on the membership's notifier goroutine.
func (cs *clusterState) membersChanged() {
	if m := cs.n.shards; m != nil {
		m.Trigger()
	}
	cs.mu.Lock()
	b := cs.bus
	cs.mu.Unlock()
	if b == nil {
		// Membership is still starting (cs.mem may not be set yet):
		// attachBus calls this again.
		return
	}
	cs.updateLinks()
	routes := cs.routeAddrs(cs.n.advertised(b.RouteAddr()))
	cs.mu.Lock()
	same := slices.Equal(routes, cs.routes)
	cs.routes = routes
	cs.mu.Unlock()
	if same {
		return
	}
	if err := b.SetRoutes(routes); err != nil && !errors.Is(err, bus.ErrClosed) {
		cs.n.log.Warn("could not update NATS routes", "err", err)
	}
	for _, m := range cs.mem.Members() {
		if id := m.Tags[tagCluster]; id != "" && id != cs.clusterID && m.State == membership.Alive {
			cs.n.log.Error("a member of another cluster gossips with this one", "member", m.ID, "its_cluster", id, "cluster", cs.clusterID)
		}
	}
}

// checkReady decides readiness: this node sees a majority of the members
// it knows alive (an isolated node does not), and JetStream answers.
func (cs *clusterState) checkReady(ctx context.Context) {
	alive, known := 0, 0
	for _, m := range cs.mem.Members() {
		switch m.State {
		case membership.Alive:
			alive++
			known++
		case membership.Suspect, membership.Failed:
			known++
		}
	}
	var reason string
	if alive*2 <= known {
		reason = fmt.Sprintf("this node sees only %d of %d members alive: no majority", alive, known)
	} else {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		if err := cs.n.bus.JetStreamReady(ctx); err != nil {
			reason = "JetStream has no meta leader this node can reach: " + err.Error()
		}
		cancel()
	}
	if ctx.Err() != nil {
		return // stopping: the check was cut short
	}
	cs.mu.Lock()
	if cs.leaving {
		cs.mu.Unlock()
		return
	}
	was := cs.ready
	cs.ready, cs.reason = reason == "", reason
	cs.mu.Unlock()
	if was != (reason == "") {
		if reason == "" {
			cs.n.log.Info("cluster ready", "members_alive", alive)
		} else {
			cs.n.log.Warn("cluster not ready", "reason", reason)
		}
	}
}

// readiness is the cluster's half of /readyz.
func (cs *clusterState) readiness() (bool, string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.ready, cs.reason
}

// secretFingerprint identifies a route password without revealing it (32
// bits of a hash: enough to tell a mistake, too few to test guesses
// against): nodes compare it before they route to each other.
func secretFingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	h := sha256.Sum256([]byte("troupe route secret\x00" + secret))
	return hex.EncodeToString(h[:4])
}

// deriveSecret makes the NATS route password from the gossip key, so that
// one secret configures a cluster.
func deriveSecret(key []byte) string {
	h := sha256.Sum256(append([]byte("troupe nats routes\x00"), key...))
	return hex.EncodeToString(h[:16])
}
