package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/lease"
	"github.com/troupe-dev/troupe/cluster/membership"
	"github.com/troupe-dev/troupe/cluster/shards"
	"github.com/troupe-dev/troupe/journal/jsstore"
	"github.com/troupe-dev/troupe/journal/jsstore/ownedcopy"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// tagShards is gossiped as "1" once the node's shard manager runs: only
// such members are given shards.
const tagShards = "sh"

// DefaultShards is a cluster's shard count when --shards is not given:
// the smallest multiple of 32 for which every member count from 3 to 16
// holds at most 1.1 × the mean (the placement's balance bound with whole
// shards), at about 1 MiB of memory and 0.6 ms/s of CPU per replicated
// stream across three nodes (docs/benchmarks.md, "Idle streams").
const DefaultShards = 96

// startSharding opens the cluster's replicated journal and the shard
// leases, and creates the shard manager (started later, once the runtime
// runs). It runs once NATS is up and JetStream answers.
func (n *Node) startSharding(ctx context.Context) error {
	cfg := n.cfg
	nc := n.bus.Conn()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	// Bounded by the join timeout, but never less than 2 minutes: a busy
	// machine's first start creates a Raft group per stream.
	lctx, cancel := context.WithTimeout(ctx, max(cfg.JoinTimeout, 2*time.Minute))
	defer cancel()
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = n.autoReplicas(lctx)
	}
	n.log.Info("replicated journal", "shards", cfg.Shards, "replicas", replicas)
	leases, err := lease.Open(lctx, js, lease.Config{Replicas: replicas, Logger: n.log})
	if err != nil {
		return fmt.Errorf("node: shard leases: %w", err)
	}
	if n.checkpoints, err = shards.OpenCheckpoints(lctx, js, replicas); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	S := cfg.Shards
	var mgr *shards.Manager
	jcfg := jsstore.Config{
		Conn: nc, Partitions: S, Replicas: replicas, Logger: n.log,
		PartitionOf: func(stream string) int {
			kind, id, _ := strings.Cut(stream, "/")
			return actors.ShardOf(kind, id, S)
		},
		RequireOwnership: true,
		KeepEventTimes:   true, // the local copy stamps events (ownedcopy)
		OnFenced:         func(p int) { mgr.Fenced(p) },
		// The owner leads its shard's stream: its appends and reads of
		// heads and idempotency keys stay in its own process. Not at
		// once: after a crash the stream may still be electing.
		LeadLocallyAfter: 5 * time.Second,
	}
	var store *jsstore.Store
	for {
		// Creating the streams races with the other nodes doing the same
		// and with the first elections of their Raft groups: a timeout
		// is retried (Open binds to what exists) until JoinTimeout.
		store, err = jsstore.Open(lctx, jcfg)
		var layout *jsstore.LayoutError
		if err == nil || lctx.Err() != nil || errors.As(err, &layout) {
			break
		}
		// Anything else is the cluster forming (streams being created by
		// several nodes, Raft groups electing): retried, and logged.
		n.log.Warn("replicated journal not open yet; retrying", "err", err)
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("node: replicated journal: %w", err)
	}
	// The owned shards' events and snapshots are kept in the node's own
	// Badger too, so an entity recovers without JetStream when its copy
	// is complete (ADR 0011, "Local copy"); Close closes store too.
	owned, err := ownedcopy.Open(ownedcopy.Config{Store: store, Dir: filepath.Join(cfg.DataDir, "owned"), Logger: n.log})
	if err != nil {
		store.Close()
		return fmt.Errorf("node: local copy of the owned shards: %w", err)
	}
	n.journal = owned
	n.onStop("journal", func(context.Context) error { return owned.Close() })
	n.shardSrv = newShardServer(n, nc)
	mgr, err = shards.New(shards.Config{
		Self: n.ident.NodeID, Shards: S, Leases: leases, View: n.cluster.shardView,
		Fence: func(ctx context.Context, shard int, epoch uint64) error {
			_, err := owned.Acquire(ctx, shard, epoch, n.ident.NodeID)
			return err
		},
		Unfence: owned.Release,
		Drain: func(ctx context.Context, shard int) error {
			if n.rt == nil {
				return nil
			}
			return n.rt.StopShard(ctx, shard)
		},
		Serve:  n.shardSrv.serve,
		Logger: n.log,
	})
	if err != nil {
		return err
	}
	n.shards = mgr
	if n.leaders, err = shards.NewLeaders(shards.LeadersConfig{
		Self: n.ident.NodeID, Leases: leases, View: n.cluster.shardView, Logger: n.log,
	}); err != nil {
		return err
	}
	return nil
}

// transient reports whether err is JetStream not answering yet (a stream
// or bucket whose Raft group has no leader yet, a timeout): worth trying
// again while the cluster forms.
func transient(err error) bool {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return true
	case errors.As(err, &api):
		return api.Code == 503 || api.Code == 408
	}
	return false
}

// autoReplicas is min(3, the alive members with the jetstream role), once
// the JetStream meta group has that many servers (waiting up to 10 s;
// then what the meta group has). Every node of a cluster that boots
// together computes the same count, so they create the streams and
// buckets alike.
func (n *Node) autoReplicas(ctx context.Context) int {
	js := 0
	for _, m := range n.cluster.mem.Members() {
		if m.State == membership.Alive && m.Tags[tagCluster] == n.cluster.clusterID &&
			slices.Contains(strings.Split(m.Tags[tagRoles], ","), RoleJetStream) {
			js++
		}
	}
	want := min(3, max(1, js))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		size := n.bus.State().MetaSize
		if size >= want {
			return want
		}
		select {
		case <-ctx.Done():
			return min(want, max(1, size))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startShards starts taking shards, once the runtime runs. On shutdown
// the shards are handed over (drained, leases released) before the
// runtime stops.
func (n *Node) startShards() {
	n.shards.Start()
	n.shardsOn.Store(true)
	n.onStop("shards", func(ctx context.Context) error {
		err := n.shards.Close(ctx)
		n.shardSrv.close()
		return err
	})
}

// stopLeaders hands this node's singletons over: first thing on shutdown,
// so that another node runs them within a fraction of a second.
func (n *Node) stopLeaders(ctx context.Context) error {
	if n.leaders == nil {
		return nil
	}
	return n.leaders.Close(ctx)
}

// Leaders lists the singletons as this node sees them
// (ClusterService.Leaders). A single node runs every singleton itself.
func (n *Node) Leaders() *troupev1.LeadersResponse {
	resp := &troupev1.LeadersResponse{NodeId: n.ident.NodeID}
	if n.leaders == nil {
		if n.rt != nil {
			for _, s := range n.rt.Singletons() {
				resp.Leaders = append(resp.Leaders, &troupev1.Leader{Singleton: s.Name, Node: n.ident.NodeID})
			}
		}
		return resp
	}
	for _, in := range n.leaders.Leaders() {
		resp.Leaders = append(resp.Leaders, &troupev1.Leader{
			Singleton: in.Name, Node: in.Leader, Epoch: in.Epoch, Since: in.Since.UTC().Format(time.RFC3339Nano),
		})
	}
	return resp
}

// shardView is what membership says, for the shard manager.
func (cs *clusterState) shardView() shards.View {
	var v shards.View
	alive, known := 0, 0
	for _, m := range cs.mem.Members() {
		if m.ID != cs.n.ident.NodeID && m.Tags[tagCluster] != cs.clusterID {
			continue
		}
		owns := m.Tags[tagShards] == "1" && slices.Contains(strings.Split(m.Tags[tagRoles], ","), RoleShards)
		switch m.State {
		case membership.Alive, membership.Suspect:
			// A suspect keeps its shards: suspicion is often a hiccup,
			// and moving shards back and forth costs more.
			alive++
			known++
			if owns {
				v.Alive = append(v.Alive, m.ID)
			}
		case membership.Failed:
			known++
			v.Dead = append(v.Dead, m.ID)
		default: // leaving, left
			v.Dead = append(v.Dead, m.ID)
		}
	}
	v.Majority = alive*2 > known
	return v
}

// Shards lists the shards as this node sees them (ClusterService.Shards).
// A single node owns every shard of its placement.
func (n *Node) Shards() *troupev1.ShardsResponse {
	resp := &troupev1.ShardsResponse{NodeId: n.ident.NodeID}
	if n.shards == nil {
		if n.rt == nil {
			return resp
		}
		for s := range actors.DefaultShards {
			resp.Shards = append(resp.Shards, &troupev1.Shard{
				Shard: uint32(s), Owner: n.ident.NodeID, Target: n.ident.NodeID,
				State: shards.Serving.String(), Entities: uint32(n.rt.ShardEntities(s)),
			})
		}
		return resp
	}
	for _, in := range n.shards.Shards() {
		sh := &troupev1.Shard{
			Shard: uint32(in.Shard), Owner: in.Owner, Target: in.Target, State: in.State.String(),
			Epoch: in.Epoch, Since: in.Since.UTC().Format(time.RFC3339Nano),
		}
		if n.rt != nil {
			sh.Entities = uint32(n.rt.ShardEntities(in.Shard))
		}
		resp.Shards = append(resp.Shards, sh)
	}
	return resp
}
