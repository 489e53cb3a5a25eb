package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/cluster/link"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Forwarding between nodes (docs/adr/0014-sharding.md). The owner of a
// shard subscribes to the shard's subject while it serves it; any node
// sends a command for the shard there as a NATS request, so the sender
// needs no routing table: NATS interest is the route. A request that finds
// no subscriber (the shard is moving) or a node that no longer serves the
// shard is tried again, bounded by the caller's deadline. Every forwarded
// command carries an idempotency key (the node gives one to a command
// without), so a retry after a lost answer never applies it twice.

// forwardSubject is the subject the owner of shard serves.
func forwardSubject(shard int) string { return "_TROUPE.shard." + strconv.Itoa(shard) }

// forwardQueue is the queue group of a shard's subject: during the
// moment two nodes both subscribe (an old owner that has not noticed),
// one of them gets each request.
const forwardQueue = "owner"

// maxForwardWait bounds a forward whose context has no deadline (a
// reactor's or timer's command).
const maxForwardWait = 30 * time.Second

// forwarder implements actors.Forwarder: over the direct link to the
// owner the placement names when it has one (link.go), else over NATS.
type forwarder struct {
	shardOf func(kind, id string) int // the shard an entity belongs to
	nc      *nats.Conn
	// link and linkAddr are the direct link (nil: NATS only) and the
	// link address of a node ("" when it has none).
	link     *link.Client
	linkAddr func(node string) string
	// ready is the node's view of the cluster (nil: not asked): when no
	// node served a shard in time, its reason says why when it is one
	// this node knows (no majority, no JetStream meta leader), rather
	// than leaving the user to guess at a move that cannot happen.
	ready func() (bool, string)
	// direct and viaNATS count the attempts each way (tests).
	direct, viaNATS atomic.Int64
}

var _ actors.Forwarder = (*forwarder)(nil)

// Forward sends cmd to the node serving its shard and returns that node's
// outcome or error, as the client would have had it there.
func (f *forwarder) Forward(ctx context.Context, owner string, cmd *troupev1.Command, external bool) (*actors.Outcome, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxForwardWait)
		defer cancel()
	}
	generated := false // the key is this call's own, never sent before
	if cmd.GetIdempotencyKey() == "" || cmd.GetKeyUnused() {
		cmd = proto.Clone(cmd).(*troupev1.Command)
		cmd.KeyUnused = false // only this call may say so, of its own key
	}
	if cmd.GetIdempotencyKey() == "" {
		// A key makes any repeat of the command (a retry across a
		// shard's move) apply it at most once. It is new on every call
		// (not derived from the command's id, which a caller may reuse).
		cmd.IdempotencyKey = "fwd-" + newID()
		generated = true
	}
	shard := f.shardOf(cmd.GetKind(), cmd.GetEntityId())
	subject := forwardSubject(shard)
	delivered := false // a request reached a node that may have run it
	// The first attempts go over the direct link to the named owner,
	// until it answers that it does not own the shard or cannot be
	// reached; then NATS interest finds whoever serves the shard.
	linkAddr := ""
	if f.link != nil && owner != "" && f.linkAddr != nil {
		linkAddr = f.linkAddr(owner)
	}
	backoff := time.Millisecond
	// Keep the end of the deadline to answer: a command that never
	// reached a node is reported "not applied" before the caller gives up
	// (a caller that times out first knows nothing).
	dl, _ := ctx.Deadline()
	reserve := min(250*time.Millisecond, time.Until(dl)/10)
	waitCtx, cancelWait := context.WithDeadline(ctx, dl.Add(-reserve))
	defer cancelWait()
	for {
		if waitCtx.Err() != nil {
			if delivered {
				return nil, fmt.Errorf("node: forward to the owner of shard %d: no answer in time: %w", shard, context.DeadlineExceeded)
			}
			// Nobody received the command: it certainly did not happen.
			why := "is moving between nodes and no node served it in time"
			if f.ready != nil {
				if ok, reason := f.ready(); !ok && reason != "" {
					why = "was served by no node in time, and this node reports the cluster not ready (" + reason + ")"
				}
			}
			return nil, &codes.Error{Code: codes.Unavailable, Message: fmt.Sprintf(
				"%s/%s: shard %d %s; the command was not applied: send it again",
				cmd.GetKind(), cmd.GetEntityId(), shard, why)}
		}
		// The owner gets what is left of the wait as its deadline, so it
		// answers (even "deadline exceeded") before this node gives up.
		left := time.Until(dl.Add(-reserve)) * 9 / 10
		// The owner need not look up a key that this call made and that
		// no attempt can have delivered yet: it cannot be recorded. Once
		// an attempt may have reached an owner, every later one is
		// looked up (and answered as a repeat if that one took effect).
		if generated {
			cmd.KeyUnused = !delivered
		}
		body, err := proto.Marshal(&troupev1.Forward{Command: cmd, External: external, DeadlineMs: uint32(max(left, time.Millisecond) / time.Millisecond)})
		if err != nil {
			return nil, fmt.Errorf("node: forward: %w", err)
		}
		var data []byte
		if linkAddr != "" {
			f.direct.Add(1)
			data, err = f.link.Call(waitCtx, linkAddr, body)
		} else {
			f.viaNATS.Add(1)
			var msg *nats.Msg
			if msg, err = f.nc.RequestWithContext(waitCtx, subject, body); err == nil {
				data = msg.Data
			}
		}
		switch {
		case err == nil:
			var r troupev1.ForwardReply
			if err := proto.Unmarshal(data, &r); err != nil {
				return nil, fmt.Errorf("node: forward to shard %d: the owner's answer does not decode: %w", shard, err)
			}
			if !r.GetNotOwner() {
				return forwardOutcome(&r)
			}
			// That node does not serve the shard (any more): nothing
			// was applied there.
			if linkAddr != "" {
				// Whoever serves it now answers on NATS, at once.
				linkAddr = ""
				continue
			}
		case errors.Is(err, nats.ErrNoResponders):
			// Nobody serves the shard at this moment: it is moving.
		case errors.Is(err, link.ErrNotSent):
			// The link could not reach the owner; the command never
			// left this node: NATS, at once.
			linkAddr = ""
			continue
		default:
			// A timeout waiting for the answer, or a connection problem:
			// the request may have reached the owner. A repeat carries
			// the same key, so it answers rather than applies again.
			delivered = true
			linkAddr = ""
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-waitCtx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// forwardOutcome turns the owner's reply back into an outcome or error
// that the contract classifies exactly as the owner did.
func forwardOutcome(r *troupev1.ForwardReply) (*actors.Outcome, error) {
	if r.GetErrorCode() != "" {
		err := &codes.Error{Code: codes.Parse(r.GetErrorCode()), Message: r.GetErrorMessage()}
		if ms := r.GetRetryAfterMs(); ms > 0 {
			return nil, &retryAfterError{err: err, after: time.Duration(ms) * time.Millisecond}
		}
		return nil, err
	}
	return &actors.Outcome{
		Reply: r.GetReply(), Sequence: r.GetSequence(), Partition: int(r.GetPartition()), Position: r.GetPosition(),
		Events: r.GetEvents(), Duplicate: r.GetDuplicate(),
	}, nil
}

// shardServer answers the forwarded commands of the shards this node
// serves: one subscription per served shard, each command on its own
// goroutine (at most maxConcurrentRequests at once).
type shardServer struct {
	n    *Node
	nc   *nats.Conn
	sem  chan struct{}
	wg   sync.WaitGroup
	stop chan struct{}
	once sync.Once
}

func newShardServer(n *Node, nc *nats.Conn) *shardServer {
	return &shardServer{n: n, nc: nc, sem: make(chan struct{}, maxConcurrentRequests), stop: make(chan struct{})}
}

// serve subscribes to shard's subject; the returned stop unsubscribes.
func (s *shardServer) serve(shard int) (func(), error) {
	sub, err := s.nc.QueueSubscribe(forwardSubject(shard), forwardQueue, s.handle)
	if err != nil {
		return nil, fmt.Errorf("node: serve shard %d: %w", shard, err)
	}
	// Make sure the server has the interest before the shard counts as
	// served (a forward sent now reaches this node).
	if err := s.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("node: serve shard %d: %w", shard, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// close stops taking forwarded commands and waits for those running.
func (s *shardServer) close() {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

func (s *shardServer) handle(m *nats.Msg) {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return
	}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		s.answer(m)
	}()
}

func (s *shardServer) answer(m *nats.Msg) {
	if b := s.reply(m.Data); b != nil {
		_ = m.Respond(b)
	}
}

// direct answers a command that came over the forward link (link.go). It
// reaches this node whether or not it serves the shard: the runtime
// refuses one it does not own (a NotOwner answer, and the sender asks
// NATS), and so does a node that stopped serving.
func (s *shardServer) direct(_ context.Context, req []byte) []byte {
	select {
	case <-s.stop:
		b, _ := proto.Marshal(&troupev1.ForwardReply{NotOwner: true})
		return b
	default:
	}
	return s.reply(req)
}

// reply runs a forwarded command and encodes its answer: never nil (an
// empty answer is empty, not nil), except when it cannot be encoded;
// then nil, and the sender gets no answer and times out, not knowing
// whether the command ran (over NATS as over the link).
func (s *shardServer) reply(data []byte) []byte {
	var fw troupev1.Forward
	var r *troupev1.ForwardReply
	if err := proto.Unmarshal(data, &fw); err != nil || fw.GetCommand() == nil {
		r = &troupev1.ForwardReply{ErrorCode: codes.Internal.String(), ErrorMessage: "a forwarded command did not decode (nodes of different versions?)"}
	} else {
		wait := time.Duration(fw.GetDeadlineMs()) * time.Millisecond
		if wait <= 0 || wait > s.n.cfg.RequestTimeout {
			wait = s.n.cfg.RequestTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		ctx, span := s.n.startCommand(ctx, fw.GetCommand(), true)
		out, err := s.n.rt.SendForwarded(ctx, fw.GetCommand(), fw.GetExternal())
		endCommand(span, out, err)
		cancel()
		r = forwardReply(out, err)
	}
	b, err := proto.Marshal(r)
	if err != nil {
		return nil
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

// forwardReply encodes an outcome or error for the sending node.
func forwardReply(out *actors.Outcome, err error) *troupev1.ForwardReply {
	var no *actors.NotOwnerError
	switch {
	case errors.As(err, &no):
		return &troupev1.ForwardReply{NotOwner: true}
	case err != nil:
		code, msg, after := contract(err)
		return &troupev1.ForwardReply{ErrorCode: code.String(), ErrorMessage: msg, RetryAfterMs: uint32(after / time.Millisecond)}
	}
	return &troupev1.ForwardReply{
		Reply: out.Reply, Sequence: out.Sequence, Partition: uint32(out.Partition), Position: out.Position,
		Events: out.Events, Duplicate: out.Duplicate,
	}
}
