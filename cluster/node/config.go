package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/topics"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

// Config configures a node. Every field has a default; the zero value runs a
// single node with data in ./data and the API on 127.0.0.1:8080.
type Config struct {
	// NodeID is the node's stable id: its name in logs, its serf name and
	// its NATS server name. Default: the id recorded in the data dir
	// (node.json), or on first start "node-" and 8 random hex digits,
	// recorded there. A data dir recorded for another id is refused.
	NodeID string
	// Version is the binary's version, gossiped to other nodes.
	Version string
	// DataDir holds the journal (journal/), the read store (read/), NATS's
	// JetStream storage (nats/) and the plugin compilation cache (cache/).
	// Default: "./data".
	DataDir string
	// HTTPAddr serves the API (Connect: gRPC, gRPC-Web and JSON over
	// HTTP), /healthz, /readyz and /metrics. Port 0 picks a free port.
	// Default: "127.0.0.1:8080".
	HTTPAddr string
	// NATSHost and NATSPort are where external NATS clients connect.
	// Defaults: 127.0.0.1 and 4222; port -1 picks a free port.
	NATSHost string
	NATSPort int
	// NATSNoListen keeps NATS in-process only (no TCP port).
	NATSNoListen bool
	// NATSToken, when set, is required from every NATS client.
	NATSToken string
	// NATSNkeys, when set, are the public user nkeys allowed to connect
	// (exclusive with NATSToken).
	NATSNkeys []string
	// NATSMonitorPort serves NATS's monitoring endpoints (0: off).
	NATSMonitorPort int
	// NATSMaxPayload caps one NATS message. Default: 1 MiB.
	NATSMaxPayload int
	// EventSubject is where committed events are published, with {kind},
	// {id} and {type} filled in. Default: "troupe.events.{kind}.{id}".
	// "-" turns publishing off.
	EventSubject string
	// DurableTopics are declared at start (JetStream streams in the data
	// dir): their topics get at-least-once delivery. See package topics.
	DurableTopics []topics.Durable
	// EventSubjectByKind overrides EventSubject for some kinds
	// (kind -> template; "-" keeps that kind's events off NATS).
	EventSubjectByKind map[string]string
	// CommandSubjectPrefix is where commands can be sent as NATS
	// requests: "<prefix>.<kind>.<id>". Default: "troupe.cmd". "-" turns
	// it off.
	CommandSubjectPrefix string
	// PluginDir is the directory of Wasm plugins ("" = none).
	PluginDir string
	// PluginMemoryBudget bounds, in bytes, the linear memory of all plugin
	// instances together (plugins.Config.MemoryBudget). Default: a quarter
	// of the machine's (or the cgroup's) memory, at least 256 MiB.
	PluginMemoryBudget int64
	// Sync is the journal's sync policy: SyncAlways (the zero value and
	// default: a command is acknowledged only once its events are
	// fsynced), SyncInterval or SyncNone. It is a flag value
	// ("always", "interval", "none").
	Sync badgerstore.SyncPolicy
	// SyncInterval is the fsync period under SyncInterval. Default:
	// badgerstore.DefaultSyncInterval (10 ms).
	SyncInterval time.Duration
	// MaxRequestBytes caps an API request body. Default: 1 MiB.
	MaxRequestBytes int
	// RequestTimeout bounds one API call. Default: 10s.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds a graceful shutdown. Default: 10s.
	ShutdownTimeout time.Duration
	// Gossip, when set ("host:port"), runs the node in a cluster: serf
	// gossips there (UDP and TCP) and the embedded NATS server joins the
	// other nodes' as a NATS cluster with JetStream clustered. Empty: a
	// single node.
	Gossip string
	// GossipAdvertise is the gossip address other nodes dial, when it
	// differs from Gossip (NAT, 0.0.0.0). Default: Gossip.
	GossipAdvertise string
	// Join are the gossip addresses of nodes to join. Empty: this node
	// founds a new cluster (or, with a data dir that has been in one,
	// waits for its members to come to it).
	Join []string
	// JoinTimeout bounds how long Start retries the seeds (with back-off)
	// before it gives up with an error naming them. Default: 2 minutes.
	JoinTimeout time.Duration
	// ClusterPort is the NATS route port, on Gossip's host. Default 6222;
	// -1 picks a free port.
	ClusterPort int
	// ForwardPort is the port of the direct link that carries forwarded
	// commands between nodes (cluster/link, docs/adr/0020-direct-forward-
	// link.md), on Gossip's host. 0 (the default) picks a free port, which
	// the node gossips to the others; -1 turns the link off, and forwards
	// go over NATS only (as they also do whenever the link cannot reach
	// the owner).
	ForwardPort int
	// GossipKey encrypts gossip (16, 24 or 32 bytes, AES-GCM). Every node
	// of a cluster needs the same key; a node with another is refused.
	GossipKey []byte
	// ClusterSecret is the password every NATS route between nodes must
	// present. Default: derived from GossipKey (none without a key).
	ClusterSecret string
	// Roles are what this node does in a cluster: RoleShards (own shards)
	// and RoleJetStream (store replicated streams). Default: both.
	Roles []string
	// Shards is the number of shards of a cluster, fixed when the cluster
	// is created (recorded in the replicated journal; a node configured
	// otherwise is refused). Default DefaultShards. Cluster only.
	Shards int
	// Replicas is the replica count of the cluster's replicated streams
	// and buckets. 0 (the default): min(3, the JetStream nodes of the
	// cluster when this node starts); a node that starts later and sees
	// more raises the streams' count up to 3.
	Replicas int
	// ReapFailedAfter is how long a failed member stays listed before it
	// is forgotten. Default: membership.DefaultReapFailedAfter.
	ReapFailedAfter time.Duration
	// Setup registers the node's entity kinds, projections and queries
	// (for the demo: bank.Register). Nil registers nothing.
	Setup func(rt *actors.Runtime) error
	// Logger receives every component's logs. Default: slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set, records the node's OpenTelemetry spans
	// (tracing.go); the caller owns it (and shuts it down). Nil: a
	// provider with an OTLP/HTTP exporter configured by the OTEL_*
	// environment variables, or no tracing at all when they ask for none
	// (the default: docs/operations.md, "Tracing").
	TracerProvider trace.TracerProvider

	// AuthTokensFile, when set, turns authentication on: every API call,
	// NATS client and dashboard visit presents a token of this file
	// ("<role> <token> [name]" lines, roles reader, writer, admin; see
	// auth.go and docs/operations.md). A missing or unreadable file, or
	// one without tokens, refuses the start; changes are picked up while
	// the node runs. Empty: no authentication (a warning when the API
	// listens beyond loopback).
	AuthTokensFile string
	// AuthReloadInterval is how often the token file is checked for
	// changes. Default: 1s.
	AuthReloadInterval time.Duration
	// TLSCertFile and TLSKeyFile (PEM), when set, serve the API, the NATS
	// client port and the NATS routes over TLS. A key that does not match
	// the certificate refuses the start.
	TLSCertFile, TLSKeyFile string
	// TLSCAFile (PEM) is the CA the NATS routes verify each other's
	// certificates against (mutual TLS between nodes). Required with TLS
	// in a cluster.
	TLSCAFile string
}

// withDefaults returns cfg with zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	if cfg.NATSHost == "" {
		cfg.NATSHost = "127.0.0.1"
	}
	if cfg.NATSPort == 0 {
		cfg.NATSPort = 4222
	}
	if cfg.EventSubject == "" {
		cfg.EventSubject = "troupe.events.{kind}.{id}"
	}
	if cfg.CommandSubjectPrefix == "" {
		cfg.CommandSubjectPrefix = "troupe.cmd"
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.JoinTimeout == 0 {
		cfg.JoinTimeout = 2 * time.Minute
	}
	if cfg.ClusterPort == 0 {
		cfg.ClusterPort = 6222
	}
	if len(cfg.Roles) == 0 {
		cfg.Roles = []string{RoleShards, RoleJetStream}
	}
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShards
	}
	if cfg.AuthReloadInterval == 0 {
		cfg.AuthReloadInterval = time.Second
	}
	if cfg.ClusterSecret == "" && len(cfg.GossipKey) > 0 {
		cfg.ClusterSecret = deriveSecret(cfg.GossipKey)
	}
	return cfg
}

// Validate reports the first invalid field of a defaulted config.
func (cfg Config) Validate() error {
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		return fmt.Errorf("node: http address %q: %w", cfg.HTTPAddr, err)
	}
	if cfg.NATSPort < -1 || cfg.NATSPort > 65535 {
		return fmt.Errorf("node: nats port %d out of range", cfg.NATSPort)
	}
	if cfg.NATSMonitorPort < -1 || cfg.NATSMonitorPort > 65535 {
		return fmt.Errorf("node: nats monitor port %d out of range", cfg.NATSMonitorPort)
	}
	if cfg.NATSMaxPayload < 0 || cfg.NATSMaxPayload > 64<<20 {
		return fmt.Errorf("node: nats max payload %d: want 0 (default) to 64 MiB", cfg.NATSMaxPayload)
	}
	if cfg.EventSubject != "-" {
		if err := topics.ValidateTopic(eventSubject(cfg.EventSubject, "k", "i", "t")); err != nil {
			return fmt.Errorf("node: event subject %q: %w", cfg.EventSubject, err)
		}
	}
	for kind, tmpl := range cfg.EventSubjectByKind {
		if tmpl == "-" {
			continue
		}
		if err := topics.ValidateTopic(eventSubject(tmpl, "k", "i", "t")); err != nil {
			return fmt.Errorf("node: event subject of kind %q, %q: %w", kind, tmpl, err)
		}
	}
	if cfg.CommandSubjectPrefix != "-" {
		if err := topics.ValidateTopic(cfg.CommandSubjectPrefix); err != nil {
			return fmt.Errorf("node: command subject prefix %q: %w", cfg.CommandSubjectPrefix, err)
		}
	}
	if cfg.Sync < badgerstore.SyncAlways || cfg.Sync > badgerstore.SyncNone {
		return fmt.Errorf("node: sync policy %v: want always, interval or none", cfg.Sync)
	}
	if cfg.SyncInterval < 0 {
		return errors.New("node: negative sync interval")
	}
	if cfg.PluginMemoryBudget < 0 {
		return errors.New("node: negative plugin memory budget")
	}
	if cfg.MaxRequestBytes < 0 {
		return errors.New("node: negative max request size")
	}
	if cfg.RequestTimeout < 0 || cfg.ShutdownTimeout < 0 || cfg.JoinTimeout < 0 {
		return errors.New("node: negative timeout")
	}
	if err := cfg.validateSecurity(); err != nil {
		return err
	}
	if cfg.NodeID != "" {
		if err := ValidateNodeID(cfg.NodeID); err != nil {
			return err
		}
	}
	if !cfg.clustered() {
		if len(cfg.Join) > 0 {
			return errors.New("node: --join needs --gossip (this node's gossip address)")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(cfg.Gossip); err != nil {
		return fmt.Errorf("node: gossip address %q: %w", cfg.Gossip, err)
	}
	for _, j := range cfg.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("node: seed %q: want host:port of a node's gossip address: %w", j, err)
		}
	}
	if cfg.ClusterPort < -1 || cfg.ClusterPort > 65535 {
		return fmt.Errorf("node: cluster port %d out of range", cfg.ClusterPort)
	}
	if cfg.ForwardPort < -1 || cfg.ForwardPort > 65535 {
		return fmt.Errorf("node: forward port %d out of range (0: a free port, -1: no direct link)", cfg.ForwardPort)
	}
	switch len(cfg.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("node: gossip key of %d bytes: want 16, 24 or 32 (base64 of `head -c 32 /dev/urandom`)", len(cfg.GossipKey))
	}
	if cfg.Shards < 1 || cfg.Shards > 4096 {
		return fmt.Errorf("node: --shards %d: want 1 to 4096", cfg.Shards)
	}
	if cfg.Replicas < 0 || cfg.Replicas > 5 {
		return fmt.Errorf("node: --replicas %d: want 1 to 5, or 0 for min(3, JetStream nodes)", cfg.Replicas)
	}
	for _, r := range cfg.Roles {
		if r != RoleShards && r != RoleJetStream {
			return fmt.Errorf("node: role %q: want %s or %s", r, RoleShards, RoleJetStream)
		}
	}
	return nil
}
