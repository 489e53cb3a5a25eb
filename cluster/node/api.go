package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors"
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

// outcome is the metrics label of a call's result.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (a *api) Send(ctx context.Context, req *connect.Request[troupev1.SendRequest]) (*connect.Response[troupev1.SendResponse], error) {
	m := req.Msg
	switch {
	case m.GetKind() == "":
		return nil, invalid(`missing "kind" (the entity kind, e.g. "account")`)
	case m.GetId() == "":
		return nil, invalid(`missing "id" (the entity id, e.g. "acc-1")`)
	case m.GetType() == "":
		return nil, invalid(`missing "type" (the command type, e.g. "Deposit")`)
	}
	payload := []byte("{}")
	if m.GetPayload() != nil {
		var err error
		if payload, err = protojson.Marshal(m.GetPayload()); err != nil {
			return nil, invalid("payload: %v", err)
		}
	}
	cmd := &troupev1.Command{
		CommandId:      newID(),
		Kind:           m.GetKind(),
		EntityId:       m.GetId(),
		Type:           m.GetType(),
		IdempotencyKey: m.GetIdempotencyKey(),
		Payload:        payload,
		ContentType:    "application/json",
		Metadata:       m.GetMetadata(),
	}
	// W3C trace context from the caller (an HTTP/gRPC header, or a NATS
	// request's header), carried in the envelope into plugins and onto the
	// events the command appends.
	if tp := req.Header().Get("traceparent"); tp != "" && len(tp) <= 256 {
		cmd.Trace = &troupev1.TraceContext{Traceparent: tp}
		if ts := req.Header().Get("tracestate"); len(ts) <= 512 {
			cmd.Trace.Tracestate = ts
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.n.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	out, err := a.n.rt.SendExternal(ctx, cmd)
	if err != nil {
		err = toConnect(err)
		if _, known := a.n.kinds[m.GetKind()]; known {
			a.m.commands.WithLabelValues(m.GetKind(), outcome(err)).Inc()
		}
		return nil, err
	}
	a.m.latency.WithLabelValues(m.GetKind()).Observe(time.Since(start).Seconds())
	a.m.commands.WithLabelValues(m.GetKind(), "ok").Inc()
	resp := &troupev1.SendResponse{
		Sequence:  out.Sequence,
		Position:  out.Position,
		Events:    out.Events,
		Duplicate: out.Duplicate,
	}
	if len(out.Reply) > 0 {
		resp.Reply = &structpb.Value{}
		if err := protojson.Unmarshal(out.Reply, resp.Reply); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("reply does not encode: %w", err))
		}
	}
	return connect.NewResponse(resp), nil
}

func (a *api) Query(ctx context.Context, req *connect.Request[troupev1.QueryRequest]) (*connect.Response[troupev1.QueryResponse], error) {
	m := req.Msg
	if m.GetName() == "" {
		return nil, invalid(`missing "name" (the query name, e.g. "balance")`)
	}
	params := []byte("{}")
	if m.GetParams() != nil {
		var err error
		if params, err = protojson.Marshal(m.GetParams()); err != nil {
			return nil, invalid("params: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.n.cfg.RequestTimeout)
	defer cancel()
	if t := m.GetTimeoutMs(); t > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Millisecond)
		defer cancel()
	}
	ans, err := a.n.rt.Query(ctx, m.GetName(), params, m.GetMinPosition())
	if err != nil {
		err = toConnect(err)
		if _, known := a.n.queries[m.GetName()]; known {
			a.m.queries.WithLabelValues(m.GetName(), outcome(err)).Inc()
		}
		return nil, err
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
	return connect.NewResponse(&troupev1.QueryResponse{Result: v, Position: ans.Position}), nil
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// toConnect maps the runtime's errors to API codes: the sender's mistakes
// and domain rejections are 4xx, overload and shutdown are retryable.
func toConnect(err error) error {
	var (
		unknownKind *actors.UnknownKindError
		unknownCmd  *actors.UnknownCommandError
		unknownQ    *actors.UnknownQueryError
		decode      *actors.DecodeError
		rejected    *actors.RejectedError
		notFound    *actors.NotFoundError
		full        *actors.MailboxFullError
		posTimeout  *actors.PositionTimeoutError
		unknownProj *actors.UnknownProjectionError
		internalCmd *actors.InternalCommandError
		tooLarge    *journal.TooLargeError
		conflict    *journal.ConflictError
	)
	code := connect.CodeInternal
	switch {
	case errors.As(err, &unknownKind), errors.As(err, &unknownCmd), errors.As(err, &unknownQ),
		errors.As(err, &decode), errors.Is(err, journal.ErrInvalid), errors.As(err, &tooLarge):
		code = connect.CodeInvalidArgument
	case errors.As(err, &rejected), errors.Is(err, journal.ErrTombstoned):
		code = connect.CodeFailedPrecondition
	case errors.As(err, &internalCmd):
		code = connect.CodePermissionDenied
	case errors.As(err, &notFound), errors.As(err, &unknownProj):
		code = connect.CodeNotFound
	case errors.As(err, &full):
		code = connect.CodeResourceExhausted
	case errors.As(err, &conflict):
		code = connect.CodeAborted
	case errors.As(err, &posTimeout):
		code = connect.CodeDeadlineExceeded
		if posTimeout.Want > posTimeout.Head {
			code = connect.CodeOutOfRange
		}
	case errors.Is(err, actors.ErrClosed), errors.Is(err, journal.ErrClosed):
		code = connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	}
	return connect.NewError(code, err)
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
