package node

import (
	"context"
	"strconv"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupe-dev/troupe/actors"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func (a *api) Status(ctx context.Context, _ *connect.Request[troupev1.ProjectionServiceStatusRequest]) (*connect.Response[troupev1.ProjectionServiceStatusResponse], error) {
	resp := &troupev1.ProjectionServiceStatusResponse{}
	for _, s := range a.n.rt.Projections() {
		resp.Projections = append(resp.Projections, &troupev1.ProjectionStatus{
			Name: s.Name, Position: s.Position, Head: s.Head, LastError: s.LastError,
			Reactor: s.Reactor, Internal: s.Internal,
		})
	}
	return connect.NewResponse(resp), nil
}

func (a *api) Rebuild(ctx context.Context, req *connect.Request[troupev1.RebuildRequest], out *connect.ServerStream[troupev1.RebuildResponse]) error {
	name := req.Msg.GetName()
	if name == "" {
		return toConnect(invalid(`missing "name" (the projection to rebuild)`))
	}
	target := a.n.head()
	if err := a.n.rt.RebuildProjection(ctx, name); err != nil {
		return toConnect(err)
	}
	// The rebuild goes on if the client leaves; the stream only reports.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.n.stopping, cancel)()
	var sendErr error
	err := a.n.rt.WaitProjection(ctx, name, target, func(pos uint64) {
		if sendErr == nil {
			sendErr = out.Send(&troupev1.RebuildResponse{Position: min(pos, target), Target: target})
		}
	})
	if err != nil {
		return toConnect(err)
	}
	if sendErr != nil {
		return sendErr
	}
	return out.Send(&troupev1.RebuildResponse{Position: target, Target: target, Done: true})
}

// projectionCollector exports each projection's position and lag at scrape
// time.
type projectionCollector struct {
	rt       *actors.Runtime
	position *prometheus.Desc
	lag      *prometheus.Desc
}

func newProjectionCollector(rt *actors.Runtime) *projectionCollector {
	return &projectionCollector{
		rt: rt,
		position: prometheus.NewDesc("troupe_projection_position",
			"Last position of a partition of the log that a projection has applied (a single node's log has one partition, 0).", []string{"projection", "partition"}, nil),
		lag: prometheus.NewDesc("troupe_projection_lag_events",
			"Events of a partition of the log a projection still has to apply (head minus position).", []string{"projection", "partition"}, nil),
	}
}

func (c *projectionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.position
	ch <- c.lag
}

func (c *projectionCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.rt.Projections() {
		for p, pos := range s.Positions {
			part := strconv.Itoa(p)
			ch <- prometheus.MustNewConstMetric(c.position, prometheus.GaugeValue, float64(pos), s.Name, part)
			lag := uint64(0)
			if p < len(s.Heads) && s.Heads[p] > pos {
				lag = s.Heads[p] - pos
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag), s.Name, part)
		}
	}
}
