package node

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// EventToProto converts a journal event to its wire form.
func EventToProto(e journal.Event) *troupev1.Event {
	return &troupev1.Event{
		StreamId:       e.Stream,
		Sequence:       e.Sequence,
		GlobalPosition: e.Position,
		Partition:      uint32(e.Partition),
		TimeUnixNano:   e.Time.UnixNano(),
		Type:           e.Type,
		Payload:        e.Payload,
		ContentType:    e.ContentType,
		Tags:           e.Tags,
		Metadata:       e.Metadata,
	}
}

// EventFromProto converts a wire event back to a journal event.
func EventFromProto(e *troupev1.Event) journal.Event {
	return journal.Event{
		Stream:      e.GetStreamId(),
		Sequence:    e.GetSequence(),
		Partition:   int(e.GetPartition()),
		Position:    e.GetGlobalPosition(),
		Time:        time.Unix(0, e.GetTimeUnixNano()),
		Type:        e.GetType(),
		Payload:     e.GetPayload(),
		ContentType: e.GetContentType(),
		Tags:        e.GetTags(),
		Metadata:    e.GetMetadata(),
	}
}

// Tail yields the events of one partition of the log (a single node's has
// one, 0) selected by f from position from (0: the last `last` positions),
// in order; with follow it then waits for new events until ctx ends. It is
// what `troupe events tail` runs, both against a running node and on a
// stopped node's data directory.
func Tail(ctx context.Context, j journal.Store, partition int, f journal.Filter, from uint64, last int, follow bool, yield func(journal.Event) error) error {
	if partition < 0 || partition >= j.Partitions() {
		return fmt.Errorf("%w: %d (the log has %d)", journal.ErrNoPartition, partition, j.Partitions())
	}
	if from == 0 {
		head := j.LastPosition(partition)
		if f == (journal.Filter{}) {
			from = 1
			if uint64(last) < head {
				from = head - uint64(last) + 1
			}
		} else {
			// The last `last` events that match, not the last `last`
			// positions: look back in growing windows until enough
			// match or the window reaches the start of the log.
			evs, err := lastMatching(ctx, j, partition, f, head, last)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if err := yield(ev); err != nil {
					return err
				}
			}
			from = head + 1
		}
	}
	for {
		head := j.LastPosition(partition)
		if from <= head {
			for ev, err := range j.ReadAll(ctx, partition, from, f, 0) {
				if err != nil {
					return err
				}
				if err := yield(ev); err != nil {
					return err
				}
				from = ev.Position + 1
			}
			// Every position up to head was committed when we looked, so the
			// filter has seen all of them.
			from = max(from, head+1)
		}
		if !follow {
			return nil
		}
		if _, err := j.WaitPosition(ctx, partition, from-1); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// lastMatching returns the last n events up to head that f selects, in
// order.
func lastMatching(ctx context.Context, j journal.Store, partition int, f journal.Filter, head uint64, n int) ([]journal.Event, error) {
	if n <= 0 || head == 0 {
		return nil, nil
	}
	window := uint64(n) * 4
	for {
		start := uint64(1)
		if head > window {
			start = head - window + 1
		}
		var evs []journal.Event
		for ev, err := range j.ReadAll(ctx, partition, start, f, 0) {
			if err != nil {
				return nil, err
			}
			if ev.Position > head {
				break
			}
			evs = append(evs, ev)
			if len(evs) > n {
				evs = evs[1:]
			}
		}
		if len(evs) >= n || start == 1 {
			return evs, nil
		}
		window *= 4
	}
}

func (a *api) Read(ctx context.Context, req *connect.Request[troupev1.ReadRequest], out *connect.ServerStream[troupev1.ReadResponse]) error {
	m := req.Msg
	if _, _, err := journal.ParseStream(m.GetStream()); err != nil {
		return toConnect(err)
	}
	from := max(m.GetFrom(), 1)
	for ev, err := range a.n.journal.Read(ctx, m.GetStream(), from, int(m.GetLimit())) {
		if err != nil {
			return toConnect(err)
		}
		if err := out.Send(&troupev1.ReadResponse{Event: EventToProto(ev)}); err != nil {
			return err
		}
	}
	return nil
}

func (a *api) Tail(ctx context.Context, req *connect.Request[troupev1.TailRequest], out *connect.ServerStream[troupev1.TailResponse]) error {
	m := req.Msg
	if m.GetKind() != "" && m.GetTag() != "" {
		return toConnect(invalid("kind and tag are exclusive"))
	}
	f := journal.Filter{Kind: m.GetKind(), Tag: m.GetTag()}
	// A followed tail never ends by itself: end it when the node stops, so
	// that a graceful shutdown does not wait for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.n.stopping, cancel)()
	err := Tail(ctx, a.n.journal, int(m.GetPartition()), f, m.GetFrom(), int(m.GetLast()), m.GetFollow(), func(ev journal.Event) error {
		return out.Send(&troupev1.TailResponse{Event: EventToProto(ev)})
	})
	if err != nil {
		return toConnect(err)
	}
	return nil
}

func (a *api) Stats(ctx context.Context, _ *connect.Request[troupev1.StatsRequest]) (*connect.Response[troupev1.StatsResponse], error) {
	s, err := a.n.journal.Stats(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	var last uint64
	for _, h := range s.Heads {
		last += h
	}
	return connect.NewResponse(&troupev1.StatsResponse{Streams: s.Streams, Events: s.Events, LastPosition: last, Heads: s.Heads}), nil
}
