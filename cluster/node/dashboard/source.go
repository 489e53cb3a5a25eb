package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

// Source is what the dashboard reads from a node. The dashboard declares it
// (its user) and the node implements it (cluster/node's dashboard.go).
//
// Concurrency: the dashboard calls every method on HTTP request goroutines,
// concurrently; implementations must be safe for that, must not change the
// node, and must return soon after ctx ends. Overview and Members are called
// on every page refresh (every Config.Refresh per open page): keep them
// cheap.
type Source interface {
	// Overview is the node, its plugins, projections, entity kinds and
	// running totals, as of now.
	Overview(ctx context.Context) (Overview, error)
	// Members lists the nodes of the cluster as this node sees them,
	// itself included. A single node lists only itself.
	Members(ctx context.Context) ([]Member, error)
	// Stream returns the events of the entity kind/id with sequence >=
	// from, at most limit, and what the journal knows of the stream. A
	// kind nobody registered is ErrUnknownKind; an entity without events
	// is ErrUnknownEntity (both wrapped or bare).
	Stream(ctx context.Context, kind, id string, from uint64, limit int) ([]journal.Event, journal.StreamInfo, error)
	// State is the entity's current state encoded as JSON and the sequence
	// of the last event it reflects; the same errors as Stream.
	State(ctx context.Context, kind, id string) (json.RawMessage, uint64, error)
	// Tail calls yield with the events of the global log of one entity kind
	// ("" for all kinds) from position from (0: start with the last `last`
	// positions), in order, then with new events as they commit, until ctx
	// ends (it then returns nil), the node stops (nil too), or yield
	// returns an error (which it returns). yield runs on Tail's goroutine.
	Tail(ctx context.Context, kind string, from uint64, last int, yield func(journal.Event) error) error
}

// ClusterSource is implemented by the Source of a clustered node. When the
// Source implements it, the cluster panel shows the shard map and the
// leaders beside the members; a single node does not need it. Same
// concurrency contract as Source.
type ClusterSource interface {
	// Shards lists every shard with its owner.
	Shards(ctx context.Context) ([]Shard, error)
	// Leaders lists the singleton leaderships (leases) and their holders.
	Leaders(ctx context.Context) ([]Leader, error)
}

var (
	// ErrUnknownKind is returned by a Source for an entity kind nobody
	// registered; the dashboard answers 404.
	ErrUnknownKind = errors.New("dashboard: unknown entity kind")
	// ErrUnknownEntity is returned by a Source for an entity with no
	// events; the dashboard answers 404.
	ErrUnknownEntity = errors.New("dashboard: no such entity")
)

// Overview is the state of a node at one moment.
type Overview struct {
	Node        NodeInfo     `json:"node"`
	Plugins     []Plugin     `json:"plugins"`
	Projections []Projection `json:"projections"`
	Kinds       []Kind       `json:"kinds"`
	Totals      Totals       `json:"totals"`
}

// Field is one labelled value (an address, a setting).
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// NodeInfo describes the node serving the dashboard.
type NodeInfo struct {
	// Name is the node's id in logs and in the cluster.
	Name string `json:"name"`
	// Version is the build's version (module version, VCS revision).
	Version string `json:"version"`
	// Started is when the node became ready; uptime counts from it.
	Started time.Time `json:"started"`
	// DataDir is the node's data directory.
	DataDir string `json:"data_dir"`
	// Ready mirrors /readyz.
	Ready bool `json:"ready"`
	// Addresses are where the node listens (API, NATS, ...).
	Addresses []Field `json:"addresses"`
	// Settings are other facts worth seeing (sync policy, plugin dir).
	Settings []Field `json:"settings"`
}

// Member is one node of the cluster.
type Member struct {
	Name string `json:"name"`
	// State is the membership state: alive, suspect, failed or left.
	State string `json:"state"`
	// API and NATS are the member's advertised addresses.
	API  string `json:"api"`
	NATS string `json:"nats"`
	// Self marks the node serving the dashboard.
	Self bool `json:"self"`
	// Shards is the number of shards the member owns (-1: unknown).
	Shards int `json:"shards"`
	// Tags are other facts the membership carries (roles, zone).
	Tags map[string]string `json:"tags,omitempty"`
}

// Shard is one shard of a cluster and its owner.
type Shard struct {
	ID    int    `json:"id"`
	Owner string `json:"owner"`
	// Epoch is the ownership lease's revision (its fencing token).
	Epoch uint64 `json:"epoch"`
	// State is e.g. "owned", "handing-off", "unowned".
	State string `json:"state"`
}

// Leader is the holder of one singleton leadership.
type Leader struct {
	Name   string `json:"name"`
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
	// Expires is when the lease runs out unless renewed.
	Expires time.Time `json:"expires"`
}

// Plugin is one Wasm plugin and its counters since the node started.
type Plugin struct {
	Name    string `json:"name"`
	Version string `json:"version"` // hash of the serving version's files
	Kind    string `json:"kind"`    // sidecar or ambassador
	Hooks   string `json:"hooks"`
	State   string `json:"state"` // loading, ready, stale, failed
	Order   int    `json:"order"`
	// LastError is the newest load error or call failure ("" when none).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Calls, Rejects and Failures count calls into the plugin, messages it
	// rejected, and calls in which it failed instead of deciding.
	Calls    uint64 `json:"calls"`
	Rejects  uint64 `json:"rejects"`
	Failures uint64 `json:"failures"`
	// MeanLatency is the mean call duration; P99Latency the upper bound of
	// the latency histogram bucket that holds the 99th percentile (0: no
	// calls).
	MeanLatency time.Duration `json:"mean_latency_ns"`
	P99Latency  time.Duration `json:"p99_latency_ns"`
}

// Projection is a read model's (or reactor's) progress through the global
// log.
type Projection struct {
	Name string `json:"name"`
	// Position is the last global position applied; Head the journal's.
	Position uint64 `json:"position"`
	Head     uint64 `json:"head"`
	// LastError is why the projection is failing ("" when it is not).
	LastError string `json:"last_error,omitempty"`
	// Reactor marks reactors; Internal the runtime's own projections.
	Reactor  bool `json:"reactor"`
	Internal bool `json:"internal"`
}

// Lag is the number of positions the projection still has to apply.
func (p Projection) Lag() uint64 {
	if p.Head > p.Position {
		return p.Head - p.Position
	}
	return 0
}

// Kind is an entity kind and its live entities on this node.
type Kind struct {
	Name     string   `json:"name"`
	Commands []string `json:"commands"`
	// Active is the number of entities of the kind in memory; ActiveIDs
	// names some of them (sorted, bounded by the Source).
	Active    int      `json:"active"`
	ActiveIDs []string `json:"active_ids"`
}

// Totals are counters since the node started; the dashboard turns them
// into rates.
type Totals struct {
	// Events is the global log's last position: every event ever appended.
	Events uint64 `json:"events"`
	// Commands counts the API's commands by entity kind.
	Commands []KindCount `json:"commands"`
	// Queries and FailedQueries count the API's queries.
	Queries       uint64 `json:"queries"`
	FailedQueries uint64 `json:"failed_queries"`
}

// KindCount counts the commands of one kind, by outcome.
type KindCount struct {
	Kind   string `json:"kind"`
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
}
