package node

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/troupe-dev/troupe/cluster/membership"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Members lists the members this node knows (ClusterService.Members). A
// single node lists itself alone.
func (n *Node) Members() []*troupev1.Member {
	if n.cluster == nil {
		m := &troupev1.Member{
			Id: n.ident.NodeID, State: membership.Alive.String(),
			Roles: n.cfg.Roles, Version: n.cfg.Version, LastHeard: time.Now().UTC().Format(time.RFC3339Nano),
		}
		if n.ln != nil {
			m.Api = "http://" + n.ln.Addr().String()
		}
		if n.bus != nil {
			m.Nats = n.bus.ClientURL()
		}
		return []*troupev1.Member{m}
	}
	var out []*troupev1.Member
	for _, m := range n.cluster.mem.Members() {
		pm := &troupev1.Member{
			Id: m.ID, State: m.State.String(), Gossip: m.Addr,
			Api: m.Tags[tagAPI], Nats: m.Tags[tagNATS], Route: m.Tags[tagRoute], Forward: m.Tags[tagLink],
			Version: m.Tags[tagVersion], ClusterId: m.Tags[tagCluster],
		}
		if r := m.Tags[tagRoles]; r != "" {
			pm.Roles = strings.Split(r, ",")
		}
		if !m.LastHeard.IsZero() {
			pm.LastHeard = m.LastHeard.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, pm)
	}
	return out
}

// Status is this node's view of its cluster (ClusterService.Status).
func (n *Node) Status() *troupev1.ClusterServiceStatusResponse {
	ready, reason := n.Ready()
	st := &troupev1.ClusterServiceStatusResponse{
		NodeId: n.ident.NodeID, Clustered: n.cluster != nil,
		Members: map[string]uint32{}, Ready: ready, Reason: reason,
	}
	for _, m := range n.Members() {
		st.Members[m.GetState()]++
	}
	if n.cluster != nil {
		st.ClusterId = n.cluster.clusterID
		bs := n.bus.State()
		st.MetaLeader, st.MetaSize = bs.MetaLeader, uint32(bs.MetaSize)
		for _, r := range bs.Routes {
			st.Routes = append(st.Routes, r.Server)
		}
	}
	return st
}

// clusterAPI serves ClusterService (its Status would clash with
// ProjectionService's on api).
type clusterAPI struct{ n *Node }

func (a clusterAPI) Members(context.Context, *connect.Request[troupev1.MembersRequest]) (*connect.Response[troupev1.MembersResponse], error) {
	return connect.NewResponse(&troupev1.MembersResponse{Members: a.n.Members()}), nil
}

func (a clusterAPI) Status(context.Context, *connect.Request[troupev1.ClusterServiceStatusRequest]) (*connect.Response[troupev1.ClusterServiceStatusResponse], error) {
	return connect.NewResponse(a.n.Status()), nil
}

func (a clusterAPI) Shards(context.Context, *connect.Request[troupev1.ShardsRequest]) (*connect.Response[troupev1.ShardsResponse], error) {
	return connect.NewResponse(a.n.Shards()), nil
}

func (a clusterAPI) Leaders(context.Context, *connect.Request[troupev1.LeadersRequest]) (*connect.Response[troupev1.LeadersResponse], error) {
	return connect.NewResponse(a.n.Leaders()), nil
}
