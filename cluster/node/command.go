package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors/codes"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// The node's one command path. Every transport decodes its request once
// into a command envelope (newCommand) and hands it to sendCommand, which
// returns the reply or a typed error; the transports are thin adapters
// that only encode: the Connect API (toConnect), NATS command requests
// (natsError) and, in a cluster, commands forwarded by other nodes. The
// error contract is package actors/codes.

// newCommand turns the API's SendRequest (as the Connect API, gRPC and
// NATS command requests decode it) into a command envelope, with the
// caller's W3C trace context (already bounded by the caller).
func newCommand(m *troupev1.SendRequest, trace *troupev1.TraceContext) (*troupev1.Command, error) {
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
	return &troupev1.Command{
		CommandId:      newID(),
		Kind:           m.GetKind(),
		EntityId:       m.GetId(),
		Type:           m.GetType(),
		IdempotencyKey: m.GetIdempotencyKey(),
		Payload:        payload,
		ContentType:    "application/json",
		Metadata:       m.GetMetadata(),
		Trace:          trace,
	}, nil
}

// traceContext bounds a caller's W3C trace headers; nil when absent.
func traceContext(traceparent, tracestate string) *troupev1.TraceContext {
	if traceparent == "" || len(traceparent) > 256 {
		return nil
	}
	tc := &troupev1.TraceContext{Traceparent: traceparent}
	if len(tracestate) <= 512 {
		tc.Tracestate = tracestate
	}
	return tc
}

// sendCommand runs one client command, bounded by Config.RequestTimeout,
// and records its metrics. Errors are those of the actors runtime and the
// journal (classified by codes.Of); a deadline says that the outcome is
// unknown.
func (n *Node) sendCommand(ctx context.Context, cmd *troupev1.Command) (*troupev1.SendResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	ctx, span := n.startCommand(ctx, cmd, false)
	out, err := n.rt.SendExternal(ctx, cmd)
	endCommand(span, out, err)
	kind := cmd.GetKind()
	if err != nil {
		if n.kinds[kind] {
			code, _, _ := contract(err)
			n.api.m.commands.WithLabelValues(kind, code.String()).Inc()
		}
		// Every transport says the same about a deadline: the outcome is
		// unknown, and how to retry safely.
		return nil, unknownOutcome(err)
	}
	n.api.m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	n.api.m.commands.WithLabelValues(kind, "ok").Inc()
	resp := &troupev1.SendResponse{
		Sequence:  out.Sequence,
		Position:  out.Position,
		Partition: uint32(out.Partition),
		Token:     out.Token().String(),
		Events:    out.Events,
		Duplicate: out.Duplicate,
	}
	if len(out.Reply) > 0 {
		resp.Reply = &structpb.Value{}
		if err := protojson.Unmarshal(out.Reply, resp.Reply); err != nil {
			return nil, fmt.Errorf("node: reply does not encode: %w", err)
		}
	}
	return resp, nil
}

// invalid is a malformed request.
func invalid(format string, args ...any) error {
	return &codes.Error{Code: codes.InvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// connectCodes maps the error contract onto Connect's codes (same names).
var connectCodes = map[codes.Code]connect.Code{
	codes.InvalidArgument:    connect.CodeInvalidArgument,
	codes.FailedPrecondition: connect.CodeFailedPrecondition,
	codes.PermissionDenied:   connect.CodePermissionDenied,
	codes.NotFound:           connect.CodeNotFound,
	codes.ResourceExhausted:  connect.CodeResourceExhausted,
	codes.Aborted:            connect.CodeAborted,
	codes.DeadlineExceeded:   connect.CodeDeadlineExceeded,
	codes.OutOfRange:         connect.CodeOutOfRange,
	codes.Unavailable:        connect.CodeUnavailable,
	codes.Canceled:           connect.CodeCanceled,
	codes.Internal:           connect.CodeInternal,
	codes.Unknown:            connect.CodeInternal,
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
