package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/examples/bank"
	"github.com/troupe-dev/troupe/cluster/node"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

func newDevCmd() *cobra.Command {
	var (
		cfg           node.Config
		logLevel      string
		logFormat     string
		gossipKey     string
		gossipKeyFile string
		secretFile    string
		debugAddr     string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single node with the demo bank domain",
		Long: `Run a single Troupe node with the demo bank domain (accounts, balances) and
the plugins in --plugins. It stops gracefully on Ctrl-C or SIGTERM.`,
		Example: `  troupe dev --data-dir ./data --plugins wasm-examples/build
  troupe send account/acc-1 Open '{"owner":"ada"}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.Version = version
			if cfg.GossipKey, err = readGossipKey(gossipKey, gossipKeyFile); err != nil {
				return err
			}
			if secretFile != "" {
				if cfg.ClusterSecret, err = readSecretFile("--cluster-secret-file", secretFile); err != nil {
					return err
				}
			}
			cfg.Setup = func(rt *actors.Runtime) error { return bank.Register(rt) }
			if debugAddr != "" {
				_, stop, err := serveDebug(debugAddr, log)
				if err != nil {
					return err
				}
				defer stop()
			}
			return serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data", "directory of the journal, read store, NATS storage and caches")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "address of the API, /healthz, /readyz and /metrics")
	f.StringVar(&cfg.PluginDir, "plugins", "", "directory of Wasm plugins (.wasm files with their manifests)")
	f.Int64Var(&cfg.PluginMemoryBudget, "plugin-memory-budget", 0, "bytes of linear memory all plugin instances may use together (0: a quarter of the machine's memory)")
	f.StringVar(&cfg.NATSHost, "nats-host", "127.0.0.1", "address external NATS clients connect to")
	f.IntVar(&cfg.NATSPort, "nats-port", 4222, "NATS client port (-1: pick a free one)")
	f.BoolVar(&cfg.NATSNoListen, "nats-no-listen", false, "serve NATS in-process only, with no TCP port")
	f.StringVar(&cfg.NATSToken, "nats-token", "", "token every NATS client must present (default: none)")
	f.StringSliceVar(&cfg.NATSNkeys, "nats-nkey", nil, "public user nkey (U...) allowed to connect to NATS (repeatable; exclusive with --nats-token)")
	f.IntVar(&cfg.NATSMonitorPort, "nats-monitor-port", 0, "serve NATS monitoring (/varz, /jsz, ...) on this port (0: off, -1: any)")
	f.IntVar(&cfg.NATSMaxPayload, "nats-max-payload", 1<<20, "largest NATS message in bytes")
	f.StringVar(&cfg.EventSubject, "event-subject", "troupe.events.{kind}.{id}", "where committed events are published ({kind}, {id}, {type}; - for nowhere)")
	f.StringToStringVar(&cfg.EventSubjectByKind, "event-subject-for", nil, "KIND=TEMPLATE: another event subject for one kind (repeatable; - for none)")
	f.StringVar(&cfg.CommandSubjectPrefix, "command-subject-prefix", "troupe.cmd", "NATS requests to PREFIX.<kind>.<id> are commands (- to turn off)")
	f.Var(&cfg.Sync, "sync", "journal sync policy: always, interval or none")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", badgerstore.DefaultSyncInterval, "fsync period under --sync interval")
	f.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", 1<<20, "largest API request body accepted")
	f.StringVar(&cfg.NodeID, "node-id", "", "this node's stable id (serf and NATS server name); default: the one recorded in the data dir, or a new one")
	f.StringVar(&cfg.Gossip, "gossip", "", "HOST:PORT to gossip on (serf, UDP and TCP): runs the node in a cluster")
	f.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "HOST:PORT other nodes dial for gossip (default: --gossip)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses (HOST:PORT) of nodes to join, comma-separated; none: found a new cluster")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", 2*time.Minute, "how long to retry the seeds before giving up")
	f.IntVar(&cfg.ClusterPort, "cluster-port", 6222, "NATS route port between nodes, on the --gossip host (-1: pick a free one)")
	f.IntVar(&cfg.ForwardPort, "forward-port", 0, "port of the direct link that carries forwarded commands between nodes, on the --gossip host (0: pick a free one, -1: none, forward over NATS)")
	f.StringVar(&gossipKey, "gossip-key", "", "base64 gossip encryption key (16, 24 or 32 bytes), the same on every node")
	f.StringVar(&gossipKeyFile, "gossip-key-file", "", "file holding the base64 gossip encryption key")
	f.StringVar(&cfg.ClusterSecret, "cluster-secret", "", "password of the NATS routes between nodes (default: derived from the gossip key)")
	f.StringVar(&secretFile, "cluster-secret-file", "", "file holding the NATS route password")
	f.StringSliceVar(&cfg.Roles, "roles", []string{node.RoleShards, node.RoleJetStream}, "what this node does in a cluster: shards, jetstream")
	f.IntVar(&cfg.Shards, "shards", node.DefaultShards, "number of shards of a new cluster (fixed at creation; every node must agree)")
	f.IntVar(&cfg.Replicas, "replicas", 0, "replicas of the cluster's streams and buckets (0: min(3, JetStream nodes))")
	f.StringVar(&cfg.AuthTokensFile, "auth-tokens", "", "file of API tokens, one '<role> <token> [name]' a line (roles reader, writer, admin); turns authentication on; re-read when it changes")
	f.DurationVar(&cfg.AuthReloadInterval, "auth-reload-interval", time.Second, "how often --auth-tokens is checked for changes")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate of the API, the NATS client port and the NATS routes (with --tls-key)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM key of --tls-cert")
	f.StringVar(&cfg.TLSCAFile, "tls-ca", "", "PEM CA the NATS routes verify each other against (mutual TLS; needed with --tls-cert in a cluster)")
	f.StringVar(&debugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this loopback HOST:PORT (default: off)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

// readGossipKey decodes the gossip key from the flag or from its file.
func readGossipKey(key, file string) ([]byte, error) {
	if key != "" && file != "" {
		return nil, errors.New("--gossip-key and --gossip-key-file are exclusive")
	}
	name := "--gossip-key"
	if file != "" {
		var err error
		if key, err = readSecretFile("--gossip-key-file", file); err != nil {
			return nil, err
		}
		name = "--gossip-key-file " + file
	}
	if key == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %w", name, err)
	}
	if n := len(b); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%s: the key is %d bytes: want 16, 24 or 32 (make one with: head -c 32 /dev/urandom | base64)", name, n)
	}
	return b, nil
}

// readSecretFile reads a secret from a file, without surrounding space.
func readSecretFile(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}

// serve runs a node until SIGINT or SIGTERM, then shuts it down gracefully.
func serve(parent context.Context, cfg node.Config) error {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stop() // a second signal kills the process the default way
	cfg.Logger.Info("shutting down")
	return n.Shutdown(context.Background())
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
