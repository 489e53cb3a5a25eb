package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/cluster/node"
	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// eventSource is where `troupe events` reads: a stopped node's data
// directory (opened read-only) or a running node's API.
type eventSource interface {
	read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error]
	tail(ctx context.Context, partition int, f journal.Filter, from uint64, last int, follow bool, yield func(journal.Event) error) error
	stats(ctx context.Context) (journal.Stats, error)
	close() error
}

type sourceFlags struct {
	node    string
	dataDir string
	timeout time.Duration
}

func (s *sourceFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.node, "node", defaultNode, "URL of a running node's API")
	cmd.Flags().StringVar(&s.dataDir, "data-dir", "", "read a stopped node's data directory instead of asking a node")
	cmd.Flags().DurationVar(&s.timeout, "timeout", 0, "give up after this long (0: no limit)")
}

func (s *sourceFlags) open() (eventSource, error) {
	if s.dataDir == "" {
		return &remoteSource{c: troupev1connect.NewEventServiceClient(httpClient(s.timeout), s.node)}, nil
	}
	j, err := node.OpenJournal(node.Config{DataDir: s.dataDir}, true, slog.New(slog.DiscardHandler))
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return nil, fmt.Errorf("%s is in use by a running node; ask it with --node instead: %w", s.dataDir, err)
		}
		return nil, fmt.Errorf("open %s: %w", filepath.Join(s.dataDir, "journal"), err)
	}
	return &localSource{j: j}, nil
}

type localSource struct{ j journal.Store }

func (l *localSource) read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	return l.j.Read(ctx, stream, from, limit)
}

func (l *localSource) tail(ctx context.Context, partition int, f journal.Filter, from uint64, last int, follow bool, yield func(journal.Event) error) error {
	// Nothing appends to a stopped node's journal: never follow.
	return node.Tail(ctx, l.j, partition, f, from, last, false, yield)
}

func (l *localSource) stats(ctx context.Context) (journal.Stats, error) { return l.j.Stats(ctx) }
func (l *localSource) close() error                                     { return l.j.Close() }

type remoteSource struct {
	c troupev1connect.EventServiceClient
}

func (r *remoteSource) read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		s, err := r.c.Read(ctx, connect.NewRequest(&troupev1.ReadRequest{Stream: stream, From: from, Limit: uint32(limit)}))
		if err != nil {
			yield(journal.Event{}, err)
			return
		}
		defer s.Close()
		for s.Receive() {
			if !yield(node.EventFromProto(s.Msg().GetEvent()), nil) {
				return
			}
		}
		if err := s.Err(); err != nil {
			yield(journal.Event{}, err)
		}
	}
}

func (r *remoteSource) tail(ctx context.Context, partition int, f journal.Filter, from uint64, last int, follow bool, yield func(journal.Event) error) error {
	s, err := r.c.Tail(ctx, connect.NewRequest(&troupev1.TailRequest{Kind: f.Kind, Tag: f.Tag, From: from, Last: uint32(last), Follow: follow, Partition: uint32(partition)}))
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
		if err := yield(node.EventFromProto(s.Msg().GetEvent())); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		return err
	}
	return nil
}

func (r *remoteSource) stats(ctx context.Context) (journal.Stats, error) {
	resp, err := r.c.Stats(ctx, connect.NewRequest(&troupev1.StatsRequest{}))
	if err != nil {
		return journal.Stats{}, err
	}
	m := resp.Msg
	return journal.Stats{Streams: m.GetStreams(), Events: m.GetEvents(), Heads: m.GetHeads()}, nil
}

func (r *remoteSource) close() error { return nil }

func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Read the journal: replay a stream, tail the global log, statistics",
		Long: `Read the journal of a running node (--node, the default) or of a stopped
node's data directory (--data-dir, opened read-only).`,
	}
	cmd.AddCommand(newReplayCmd(), newTailCmd(), newStatsCmd())
	return cmd
}

func newReplayCmd() *cobra.Command {
	var (
		src    sourceFlags
		stream string
		from   uint64
		limit  int
		format string
	)
	cmd := &cobra.Command{
		Use:   "replay --stream KIND/ID",
		Short: "Print a stream's events exactly as they were appended, in order",
		Example: `  troupe events replay --stream account/acc-1
  troupe events replay --stream account/acc-1 --from 2 --format table --data-dir ./data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := journal.ParseStream(stream); err != nil {
				return fmt.Errorf("--stream: %w", err)
			}
			pr, err := newPrinter(cmd.OutOrStdout(), format)
			if err != nil {
				return err
			}
			s, err := src.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := withTimeout(cmd.Context(), src.timeout)
			defer cancel()
			for ev, err := range s.read(ctx, stream, max(from, 1), limit) {
				if err != nil {
					return err
				}
				pr.print(ev)
			}
			return pr.flush()
		},
	}
	src.add(cmd)
	cmd.Flags().StringVar(&stream, "stream", "", "stream to replay, KIND/ID (required)")
	cmd.Flags().Uint64Var(&from, "from", 1, "first sequence to print")
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many events (0: all)")
	cmd.Flags().StringVar(&format, "format", "json", "output format: json (one event per line) or table")
	_ = cmd.MarkFlagRequired("stream")
	return cmd
}

func newTailCmd() *cobra.Command {
	var (
		src       sourceFlags
		kind, tag string
		from      uint64
		last      int
		format    string
		noFollow  bool
		partition int
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the global log's latest events, then follow new ones",
		Example: `  troupe events tail --kind account
  troupe events tail --from 1 --no-follow --data-dir ./data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && tag != "" {
				return errors.New("--kind and --tag are exclusive")
			}
			pr, err := newPrinter(cmd.OutOrStdout(), format)
			if err != nil {
				return err
			}
			pr.stream = true
			s, err := src.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := withTimeout(cmd.Context(), src.timeout)
			defer cancel()
			err = s.tail(ctx, partition, journal.Filter{Kind: kind, Tag: tag}, from, last, !noFollow, func(ev journal.Event) error {
				pr.print(ev)
				return pr.flush()
			})
			if err != nil && !(src.timeout > 0 && errors.Is(err, context.DeadlineExceeded)) {
				return err
			}
			return pr.flush()
		},
	}
	src.add(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "only events of this entity kind")
	cmd.Flags().StringVar(&tag, "tag", "", "only events with this tag")
	cmd.Flags().Uint64Var(&from, "from", 0, "first position (0: start with the last --last positions)")
	cmd.Flags().IntVar(&partition, "partition", 0, "the partition of the log to tail (a single node's log has one, 0)")
	cmd.Flags().IntVar(&last, "last", 10, "with --from 0: how many of the latest positions to print first")
	cmd.Flags().BoolVar(&noFollow, "no-follow", false, "stop after the events already committed")
	cmd.Flags().StringVar(&format, "format", "json", "output format: json (one event per line) or table")
	return cmd
}

func newStatsCmd() *cobra.Command {
	var src sourceFlags
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print the journal's number of streams, events and last position",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := src.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := withTimeout(cmd.Context(), src.timeout)
			defer cancel()
			st, err := s.stats(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "streams        %d\nevents         %d\n", st.Streams, st.Events)
			if len(st.Heads) == 1 {
				fmt.Fprintf(cmd.OutOrStdout(), "last position  %d\n", st.Heads[0])
			} else {
				for p, h := range st.Heads {
					fmt.Fprintf(cmd.OutOrStdout(), "partition %-4d last position %d\n", p, h)
				}
			}
			return nil
		},
	}
	src.add(cmd)
	return cmd
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// printer prints events as JSON lines or as a table.
type printer struct {
	w      io.Writer
	table  *tabwriter.Writer
	stream bool // tail: print the stream id column in tables
	header bool
}

func newPrinter(w io.Writer, format string) (*printer, error) {
	switch format {
	case "json":
		return &printer{w: w}, nil
	case "table":
		return &printer{w: w, table: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}, nil
	}
	return nil, fmt.Errorf("--format %q: want json or table", format)
}

// eventJSON is the JSON line of one event: the payload appears as the JSON
// it was appended as (or as a string when it is not JSON).
type eventJSON struct {
	Stream   string            `json:"stream"`
	Sequence uint64            `json:"sequence"`
	Position uint64            `json:"position"`
	Time     string            `json:"time"`
	Type     string            `json:"type"`
	Payload  json.RawMessage   `json:"payload,omitempty"`
	Tags     []string          `json:"tags,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func payloadJSON(p []byte) json.RawMessage {
	if len(p) == 0 {
		return nil
	}
	if json.Valid(p) {
		return p
	}
	if utf8.Valid(p) {
		b, _ := json.Marshal(string(p))
		return b
	}
	b, _ := json.Marshal(p) // base64
	return b
}

func (p *printer) print(ev journal.Event) {
	ts := ev.Time.UTC().Format(time.RFC3339Nano)
	if p.table == nil {
		b, _ := json.Marshal(eventJSON{ev.Stream, ev.Sequence, ev.Position, ts, ev.Type, payloadJSON(ev.Payload), ev.Tags, ev.Metadata})
		fmt.Fprintln(p.w, string(b))
		return
	}
	if !p.header {
		fmt.Fprintln(p.table, "POSITION\tSTREAM\tSEQ\tTIME\tTYPE\tPAYLOAD")
		p.header = true
	}
	fmt.Fprintf(p.table, "%d\t%s\t%d\t%s\t%s\t%s\n", ev.Position, ev.Stream, ev.Sequence, ts, ev.Type, payloadJSON(ev.Payload))
}

func (p *printer) flush() error {
	if p.table != nil {
		return p.table.Flush()
	}
	return nil
}
