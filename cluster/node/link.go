package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/troupe-dev/troupe/cluster/link"
	"github.com/troupe-dev/troupe/cluster/membership"
)

// The direct forward link (cluster/link, docs/adr/0020-direct-forward-
// link.md): each node listens on Config.ForwardPort and gossips the
// address; a forward goes over it to the owner the placement names, and
// over NATS when the owner has no link, cannot be reached, or no longer
// owns the shard.

// tagLink is the gossiped address of the node's forward link.
const tagLink = "fwd"

// newLinkClient makes the forward link's client, before membership
// starts (its changes drop connections to nodes that are gone).
func (n *Node) newLinkClient() {
	var ctls *tls.Config
	if n.tls != nil {
		// Mutual TLS with the node certificate, as the NATS routes.
		ctls = n.tls.routes()
	}
	// A peer whose dial failed (a firewalled port) is not dialled again
	// for 5 s: meanwhile its forwards go over NATS without waiting.
	n.linkCli = link.NewClient(link.ClientConfig{Secret: n.cfg.ClusterSecret, TLS: ctls, RetryDialAfter: 5 * time.Second})
	n.onStop("forward link client", func(context.Context) error { return n.linkCli.Close() })
}

// startLink starts the forward link's server, unless turned off. It
// answers as the shard server does.
func (n *Node) startLink() error {
	if n.cfg.ForwardPort < 0 {
		return nil
	}
	var stls *tls.Config
	if n.tls != nil {
		stls = n.tls.routes()
	}
	host, _, err := net.SplitHostPort(n.cfg.Gossip)
	if err != nil {
		return fmt.Errorf("node: --gossip %q: %w", n.cfg.Gossip, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(n.cfg.ForwardPort)))
	if err != nil {
		return fmt.Errorf("node: forward port %d on %s is not free (--forward-port; 0 picks a free one): %w", n.cfg.ForwardPort, host, err)
	}
	n.linkSrv = link.Serve(ln, link.ServerConfig{
		Secret: n.cfg.ClusterSecret, TLS: stls, Handler: n.shardSrv.direct,
		MaxConcurrent: maxConcurrentRequests, Logger: n.log,
	})
	n.onStop("forward link", func(context.Context) error { return n.linkSrv.Close() })
	n.log.Info("forward link", "addr", ln.Addr().String())
	return nil
}

// linkAddrs is the forward link address of each live member.
type linkAddrs map[string]string

// updateLinks records the members' link addresses for the forwarder and
// drops the connections to addresses no longer alive, so that forwards
// waiting on a dead node's connection go another way at once.
func (cs *clusterState) updateLinks() {
	n := cs.n
	if n.linkCli == nil {
		return
	}
	cs.linksMu.Lock()
	defer cs.linksMu.Unlock()
	next := linkAddrs{}
	for _, m := range cs.mem.Members() {
		if m.ID == n.ident.NodeID || m.Tags[tagCluster] != cs.clusterID {
			continue
		}
		if m.State != membership.Alive && m.State != membership.Suspect {
			continue
		}
		if a := m.Tags[tagLink]; a != "" {
			next[m.ID] = a
		}
	}
	prev := cs.links.Swap(&next)
	if prev == nil {
		return
	}
	live := map[string]bool{}
	for _, a := range next {
		live[a] = true
	}
	for _, a := range *prev {
		if !live[a] {
			n.linkCli.Drop(a)
		}
	}
}

// linkAddr is the forward link address of node ("" when it has none, or
// is not alive as far as membership knows).
func (cs *clusterState) linkAddr(node string) string {
	if m := cs.links.Load(); m != nil {
		return (*m)[node]
	}
	return ""
}
