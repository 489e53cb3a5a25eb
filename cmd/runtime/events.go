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
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/cluster/node"
	"github.com/troupe-dev/troupe/cluster/node/dashboard"
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
			pr.hold = pr.table
			s, err := src.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := withTimeout(cmd.Context(), src.timeout)
			defer cancel()
			n := 0
			for ev, err := range s.read(ctx, stream, max(from, 1), limit) {
				if err != nil {
					return err
				}
				pr.print(ev)
				n++
			}
			if err := pr.flush(); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			// Nothing printed: say why, and fail, so that a typo in the
			// stream id is not mistaken for an empty stream.
			if from > 1 {
				for _, err := range s.read(ctx, stream, 1, 1) {
					if err == nil {
						return fmt.Errorf("stream %s has no events at or after sequence %d", stream, from)
					}
				}
			}
			return fmt.Errorf("stream %s does not exist (no events); `troupe events tail --kind %s` lists the streams of a kind", stream, strings.SplitN(stream, "/", 2)[0])
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
	cmd.Flags().IntVar(&last, "last", 10, "with --from 0: how many of the latest matching events to print first")
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

// printer prints events as JSON lines or as a table. A replay's table
// holds up to maxHeldRows rows and aligns them at flush; a tail's rows
// (and a replay's beyond that many) are printed as they come, in columns
// of fixed minimum widths that grow when a value is wider.
type printer struct {
	w      io.Writer
	table  bool
	header bool
	widths []int
	hold   bool       // hold rows until flush (replay)
	held   [][]string // rows held, the header first
}

// maxHeldRows bounds the rows a replay holds to align its table.
const maxHeldRows = 10_000

// tableColumns are the table's columns and their minimum widths. The time
// is printed with nine fraction digits, so it is always 30 characters.
var tableColumns = []struct {
	name  string
	width int
}{{"POSITION", 8}, {"STREAM", 20}, {"SEQ", 5}, {"TIME", 30}, {"TYPE", 14}, {"PAYLOAD", 0}}

func newPrinter(w io.Writer, format string) (*printer, error) {
	switch format {
	case "json":
		return &printer{w: w}, nil
	case "table":
		p := &printer{w: w, table: true}
		for _, c := range tableColumns {
			p.widths = append(p.widths, max(c.width, len(c.name)))
		}
		return p, nil
	}
	return nil, fmt.Errorf("--format %q: want json or table", format)
}

func (p *printer) row(cells ...string) {
	if p.hold {
		if len(p.held) < maxHeldRows {
			p.held = append(p.held, cells)
			return
		}
		p.release()
	}
	p.write(cells)
}

// release widens the columns to fit the held rows and prints them.
func (p *printer) release() {
	for _, r := range p.held {
		for i, c := range r[:len(r)-1] {
			p.widths[i] = max(p.widths[i], len(c))
		}
	}
	for _, r := range p.held {
		p.write(r)
	}
	p.held, p.hold = nil, false
}

func (p *printer) write(cells []string) {
	var b strings.Builder
	for i, c := range cells {
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		p.widths[i] = max(p.widths[i], len(c))
		b.WriteString(c)
		b.WriteString(strings.Repeat(" ", p.widths[i]-len(c)+2))
	}
	fmt.Fprintln(p.w, strings.TrimRight(b.String(), " "))
}

func (p *printer) print(ev journal.Event) {
	if !p.table {
		b, _ := json.Marshal(dashboard.NewEventJSON(ev))
		fmt.Fprintln(p.w, string(b))
		return
	}
	if !p.header {
		var names []string
		for _, c := range tableColumns {
			names = append(names, c.name)
		}
		p.row(names...)
		p.header = true
	}
	p.row(strconv.FormatUint(ev.Position, 10), ev.Stream, strconv.FormatUint(ev.Sequence, 10),
		ev.Time.UTC().Format("2006-01-02T15:04:05.000000000Z"), ev.Type, string(dashboard.PayloadJSON(ev.Payload)))
}

// flush prints the rows held (a replay's table); other rows are written
// as printed.
func (p *printer) flush() error {
	if p.hold {
		p.release()
	}
	return nil
}
