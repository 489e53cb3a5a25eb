package node

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// api implements the Connect services on top of the actor runtime.
type api struct {
	n *Node
	m apiMetrics
}

type apiMetrics struct {
	commands *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	queries  *prometheus.CounterVec
}

func newAPIMetrics(reg prometheus.Registerer) apiMetrics {
	m := apiMetrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_commands_total",
			Help: "Commands received by the API, by entity kind and outcome (ok or an error code).",
		}, []string{"kind", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "troupe_command_duration_seconds",
			Help:    "Time from receiving a command to its durable reply, by entity kind.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"kind"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_queries_total",
			Help: "Queries received by the API, by query name and outcome.",
		}, []string{"query", "code"}),
	}
	reg.MustRegister(m.commands, m.latency, m.queries)
	return m
}

func (a *api) Send(ctx context.Context, req *connect.Request[troupev1.SendRequest]) (*connect.Response[troupev1.SendResponse], error) {
	// W3C trace context from the caller, carried in the envelope into
	// plugins and onto the events the command appends.
	cmd, err := newCommand(req.Msg, traceContext(req.Header().Get("traceparent"), req.Header().Get("tracestate")))
	if err != nil {
		return nil, toConnect(err)
	}
	resp, err := a.n.sendCommand(ctx, cmd)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

func (a *api) Query(ctx context.Context, req *connect.Request[troupev1.QueryRequest]) (*connect.Response[troupev1.QueryResponse], error) {
	m := req.Msg
	if m.GetName() == "" {
		return nil, toConnect(invalid(`missing "name" (the query name, e.g. "balance")`))
	}
	params := []byte("{}")
	if m.GetParams() != nil {
		var err error
		if params, err = protojson.Marshal(m.GetParams()); err != nil {
			return nil, toConnect(invalid("params: %v", err))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.n.cfg.RequestTimeout)
	defer cancel()
	if t := m.GetTimeoutMs(); t > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Millisecond)
		defer cancel()
	}
	min, err := journal.ParseToken(m.GetMinPosition())
	if err != nil {
		return nil, toConnect(invalid("min_position: %v", err))
	}
	ans, err := a.n.rt.Query(ctx, m.GetName(), params, min)
	if err != nil {
		if a.n.queries[m.GetName()] {
			a.m.queries.WithLabelValues(m.GetName(), codes.Of(err).String()).Inc()
		}
		return nil, toConnect(err)
	}
	a.m.queries.WithLabelValues(m.GetName(), "ok").Inc()
	b, err := json.Marshal(ans.Result)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("result does not encode: %w", err))
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(b, v); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("result does not encode: %w", err))
	}
	return connect.NewResponse(&troupev1.QueryResponse{Result: v, Position: ans.Position, Token: ans.Token.String()}), nil
}
