package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster"
	"github.com/troupe-dev/troupe/cluster/node/dashboard"
	"github.com/troupe-dev/troupe/journal"
)

// dashboard returns the web dashboard's handler, mounted at /ui/ by
// startHTTP. It reads the node through dashboardSource and changes
// nothing.
func (n *Node) dashboard() http.Handler {
	var src dashboard.Source = &dashboardSource{n: n, started: time.Now(), version: buildVersion()}
	if n.shards != nil {
		src = clusterDashboardSource{src.(*dashboardSource)}
	}
	h, err := dashboard.New(dashboard.Config{Source: src, Logger: n.log.With("component", "dashboard")})
	if err != nil {
		// The configuration is fixed in this file, so this is a bug; it
		// shows on the page rather than failing the node.
		n.log.Error("dashboard unavailable", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "dashboard unavailable: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return h
}

// dashboardSource is the node as the dashboard sees it. Its methods run on
// request goroutines; everything they read is safe for concurrent use.
type dashboardSource struct {
	n       *Node
	started time.Time
	version string
}

var _ dashboard.Source = (*dashboardSource)(nil)

// buildVersion describes the running binary from its build information.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev + dirty
	}
	return strings.TrimSpace(v + " " + bi.GoVersion)
}

func (s *dashboardSource) Overview(ctx context.Context) (dashboard.Overview, error) {
	n := s.n
	if n.rt == nil || n.journal == nil {
		return dashboard.Overview{}, ErrClosed
	}
	dataDir := n.cfg.DataDir
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	ov := dashboard.Overview{Node: dashboard.NodeInfo{
		Name: n.ident.NodeID, Version: s.version, Started: s.started, DataDir: dataDir, Ready: n.ready.Load(),
	}}
	ov.Node.Addresses = append(ov.Node.Addresses, dashboard.Field{Name: "API", Value: "http://" + n.HTTPAddr()})
	nats := n.bus.ClientURL()
	if nats == "" {
		nats = "in-process only"
	}
	ov.Node.Addresses = append(ov.Node.Addresses, dashboard.Field{Name: "NATS", Value: nats})
	if u := n.bus.MonitorURL(); u != "" {
		ov.Node.Addresses = append(ov.Node.Addresses, dashboard.Field{Name: "NATS monitor", Value: u})
	}
	sync := n.cfg.Sync.String()
	if sync == "interval" {
		sync += " (" + n.cfg.SyncInterval.String() + ")"
	}
	plugDir := n.cfg.PluginDir
	if plugDir == "" {
		plugDir = "none"
	}
	ov.Node.Settings = []dashboard.Field{
		{Name: "Sync", Value: sync},
		{Name: "Plugins dir", Value: plugDir},
		{Name: "Live entities", Value: fmt.Sprint(n.rt.LiveEntities())},
	}

	families, err := n.metrics.Gather()
	if err != nil && len(families) == 0 {
		return dashboard.Overview{}, fmt.Errorf("metrics: %w", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(families))
	for _, f := range families {
		byName[f.GetName()] = f
	}
	ov.Plugins = s.plugins(byName)
	for _, p := range n.rt.Projections() {
		ov.Projections = append(ov.Projections, dashboard.Projection{
			Name: p.Name, Position: p.Position, Head: p.Head, LastError: p.LastError, Reactor: p.Reactor, Internal: p.Internal,
		})
	}
	kinds := n.rt.Kinds()
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].Name() < kinds[j].Name() })
	for _, k := range kinds {
		ids, active := n.rt.ActiveEntities(k.Name(), 50)
		ov.Kinds = append(ov.Kinds, dashboard.Kind{Name: k.Name(), Commands: k.CommandTypes(), Active: active, ActiveIDs: ids})
	}
	ov.Totals = totals(n.head(), byName)
	return ov, nil
}

// plugins joins the plugin host's list with the plugin metrics.
func (s *dashboardSource) plugins(byName map[string]*dto.MetricFamily) []dashboard.Plugin {
	type stats struct {
		calls, rejects, failures uint64
		mean, p99                time.Duration
	}
	st := map[string]*stats{}
	get := func(m *dto.Metric) *stats {
		name := label(m, "plugin")
		if st[name] == nil {
			st[name] = &stats{}
		}
		return st[name]
	}
	for _, m := range byName["troupe_plugin_calls_total"].GetMetric() {
		get(m).calls += uint64(m.GetCounter().GetValue())
	}
	for _, m := range byName["troupe_plugin_rejects_total"].GetMetric() {
		get(m).rejects += uint64(m.GetCounter().GetValue())
	}
	for _, m := range byName["troupe_plugin_failures_total"].GetMetric() {
		get(m).failures += uint64(m.GetCounter().GetValue())
	}
	for _, m := range byName["troupe_plugin_call_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		if h.GetSampleCount() == 0 {
			continue
		}
		p := get(m)
		p.mean = seconds(h.GetSampleSum() / float64(h.GetSampleCount()))
		p.p99 = seconds(quantileBound(h, 0.99))
	}
	var out []dashboard.Plugin
	for _, in := range s.n.plugins.List() {
		p := dashboard.Plugin{
			Name: in.Name, Version: in.Version, Hooks: in.Hooks, State: in.State.String(), Order: in.Order,
			LastError: in.LastError, LastErrorAt: in.LastErrorAt,
		}
		if in.Kind != 0 {
			p.Kind = in.Kind.String()
		}
		if m := st[in.Name]; m != nil {
			p.Calls, p.Rejects, p.Failures, p.MeanLatency, p.P99Latency = m.calls, m.rejects, m.failures, m.mean, m.p99
		}
		out = append(out, p)
	}
	return out
}

// totals reads the API's command and query counters.
func totals(head uint64, byName map[string]*dto.MetricFamily) dashboard.Totals {
	t := dashboard.Totals{Events: head}
	idx := map[string]int{}
	for _, m := range byName["troupe_commands_total"].GetMetric() {
		kind := label(m, "kind")
		i, ok := idx[kind]
		if !ok {
			i = len(t.Commands)
			idx[kind] = i
			t.Commands = append(t.Commands, dashboard.KindCount{Kind: kind})
		}
		v := uint64(m.GetCounter().GetValue())
		if label(m, "code") == "ok" {
			t.Commands[i].OK += v
		} else {
			t.Commands[i].Failed += v
		}
	}
	for _, m := range byName["troupe_queries_total"].GetMetric() {
		v := uint64(m.GetCounter().GetValue())
		if label(m, "code") == "ok" {
			t.Queries += v
		} else {
			t.FailedQueries += v
		}
	}
	return t
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantileBound is the upper bound of the histogram bucket that holds
// quantile q (the largest finite bound when it falls beyond them).
func quantileBound(h *dto.Histogram, q float64) float64 {
	want := q * float64(h.GetSampleCount())
	last := 0.0
	for _, b := range h.GetBucket() {
		last = b.GetUpperBound()
		if float64(b.GetCumulativeCount()) >= want {
			return last
		}
	}
	return last
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (s *dashboardSource) Members(context.Context) ([]dashboard.Member, error) {
	n := s.n
	owned := map[string]int{} // shards per owner, as this node knows them
	if n.shards != nil {
		for _, in := range n.shards.Shards() {
			if in.Owner != "" {
				owned[in.Owner]++
			}
		}
	}
	var out []dashboard.Member
	for _, m := range n.Members() {
		dm := dashboard.Member{
			Name: m.GetId(), State: m.GetState(), API: m.GetApi(), NATS: m.GetNats(),
			Self: m.GetId() == n.ident.NodeID,
			Tags: map[string]string{},
		}
		if n.shards == nil {
			dm.Shards = cluster.DefaultShards // a single node serves every shard
		} else {
			dm.Shards = owned[m.GetId()]
		}
		if r := m.GetRoles(); len(r) > 0 {
			dm.Tags["roles"] = strings.Join(r, ",")
		}
		if v := m.GetVersion(); v != "" {
			dm.Tags["version"] = v
		}
		if g := m.GetGossip(); g != "" {
			dm.Tags["gossip"] = g
		}
		if l := m.GetLastHeard(); l != "" {
			dm.Tags["last heard"] = l
		}
		out = append(out, dm)
	}
	return out, nil
}

// checkKind maps a kind the node did not register to ErrUnknownKind.
func (s *dashboardSource) checkKind(kind string) error {
	if !s.n.kinds[kind] {
		return fmt.Errorf("%w %q", dashboard.ErrUnknownKind, kind)
	}
	return nil
}

func (s *dashboardSource) Stream(ctx context.Context, kind, id string, from uint64, limit int) ([]journal.Event, journal.StreamInfo, error) {
	if err := s.checkKind(kind); err != nil {
		return nil, journal.StreamInfo{}, err
	}
	stream := journal.StreamID(kind, id)
	info, err := s.n.journal.Info(ctx, stream)
	if err != nil {
		return nil, info, err
	}
	if info.LastSequence == 0 {
		return nil, info, fmt.Errorf("%w: %s", dashboard.ErrUnknownEntity, stream)
	}
	if from == 0 { // the latest page
		from = 1
		if info.LastSequence > uint64(limit) {
			from = info.LastSequence - uint64(limit) + 1
		}
	}
	var events []journal.Event
	for ev, err := range s.n.journal.Read(ctx, stream, from, limit) {
		if err != nil {
			return nil, info, err
		}
		events = append(events, ev)
	}
	return events, info, nil
}

func (s *dashboardSource) State(ctx context.Context, kind, id string) (json.RawMessage, uint64, error) {
	if err := s.checkKind(kind); err != nil {
		return nil, 0, err
	}
	state, seq, err := s.n.rt.State(ctx, kind, id)
	var (
		unknownKind *actors.UnknownKindError
		notFound    *actors.NotFoundError
	)
	switch {
	case errors.As(err, &unknownKind):
		return nil, 0, fmt.Errorf("%w %q", dashboard.ErrUnknownKind, kind)
	case errors.As(err, &notFound):
		return nil, 0, fmt.Errorf("%w: %s", dashboard.ErrUnknownEntity, journal.StreamID(kind, id))
	}
	return state, seq, err
}

func (s *dashboardSource) Tail(ctx context.Context, kind string, from uint64, last int, yield func(journal.Event) error) error {
	// A followed tail never ends by itself: end it when the node stops,
	// so that a graceful shutdown does not wait for open dashboards.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.n.stopping, cancel)()
	// Partition 0: a node's Badger journal has one partition (its global log).
	err := Tail(ctx, s.n.journal, 0, journal.Filter{Kind: kind}, from, last, true, yield)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// clusterDashboardSource adds the shard map and the singletons' leaders
// to the dashboard of a clustered node (dashboard.ClusterSource).
type clusterDashboardSource struct{ *dashboardSource }

var _ dashboard.ClusterSource = clusterDashboardSource{}

// Shards lists every shard with its owner as this node knows it; the
// epoch is known for the shards this node serves.
func (s clusterDashboardSource) Shards(context.Context) ([]dashboard.Shard, error) {
	var out []dashboard.Shard
	for _, in := range s.n.shards.Shards() {
		out = append(out, dashboard.Shard{ID: in.Shard, Owner: in.Owner, Epoch: in.Epoch, State: in.State.String()})
	}
	return out, nil
}

// Leaders lists the singletons and the node that runs each.
func (s clusterDashboardSource) Leaders(context.Context) ([]dashboard.Leader, error) {
	var out []dashboard.Leader
	if s.n.leaders == nil {
		return out, nil
	}
	for _, l := range s.n.leaders.Leaders() {
		out = append(out, dashboard.Leader{Name: l.Name, Holder: l.Leader, Epoch: l.Epoch})
	}
	return out, nil
}
