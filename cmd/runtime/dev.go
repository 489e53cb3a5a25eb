package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/examples/bank"
	"github.com/troupe-dev/troupe/cluster/node"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

func newDevCmd() *cobra.Command {
	var (
		cfg       node.Config
		logLevel  string
		logFormat string
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
			cfg.Setup = func(rt *actors.Runtime) error { return bank.Register(rt) }
			return serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data", "directory of the journal, read store, NATS storage and caches")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "address of the API, /healthz, /readyz and /metrics")
	f.StringVar(&cfg.PluginDir, "plugins", "", "directory of Wasm plugins (.wasm files with their manifests)")
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
	f.StringVar(&cfg.Name, "name", "troupe", "node name, used in logs")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
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
