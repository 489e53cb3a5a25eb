package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// eventsPublisher is the projection that publishes every committed event
// to its topic, in commit order, at least once: the checkpoint advances
// only after the batch's messages are flushed to the server. Each message
// carries Nats-Msg-Id = its global position, so a JetStream stream over
// these subjects drops the repeats a crash can cause.
const eventsPublisher = "$events-publisher"

// publishDelay slows the events publisher down by this much per event: a
// fault that tests inject (TROUPE_TEST_PUBLISH_DELAY, a duration) to make
// it lag behind the commands, so that they can see a stop drain it. Never
// set it in production.
var publishDelay, _ = time.ParseDuration(os.Getenv("TROUPE_TEST_PUBLISH_DELAY"))

func (n *Node) eventsPublisherProjection() actors.Projection {
	nc := n.bus.Conn()
	return actors.Projection{
		Name: eventsPublisher,
		Apply: func(tx *actors.Tx, ev journal.Event) error {
			if publishDelay > 0 {
				time.Sleep(publishDelay) // an injected fault, see publishDelay
			}
			kind, id, err := journal.ParseStream(ev.Stream)
			if err != nil {
				return err
			}
			tmpl, ok := n.cfg.EventSubjectByKind[kind]
			if !ok {
				tmpl = n.cfg.EventSubject
			}
			if tmpl == "-" {
				return nil
			}
			m := nats.NewMsg(eventSubject(tmpl, kind, id, ev.Type))
			m.Data = ev.Payload
			m.Header.Set("Nats-Msg-Id", strconv.FormatUint(ev.Position, 10))
			m.Header.Set("Troupe-Stream", ev.Stream)
			m.Header.Set("Troupe-Sequence", strconv.FormatUint(ev.Sequence, 10))
			m.Header.Set("Troupe-Position", strconv.FormatUint(ev.Position, 10))
			m.Header.Set("Troupe-Type", ev.Type)
			m.Header.Set("Troupe-Time", ev.Time.UTC().Format(time.RFC3339Nano))
			if len(ev.Tags) > 0 {
				m.Header.Set("Troupe-Tags", strings.Join(ev.Tags, ","))
			}
			for _, k := range []string{"traceparent", "tracestate"} {
				if v := ev.Metadata[k]; v != "" {
					m.Header.Set(k, v)
				}
			}
			if sc := tx.SpanContext(); sc.IsValid() && n.tracer != nil {
				return n.publishTraced(nc, m, sc, ev.Stream)
			}
			return nc.PublishMsg(m)
		},
		Flush: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // nats needs a deadline
			defer cancel()
			return nc.FlushWithContext(ctx)
		},
	}
}

// eventSubject fills the template's {kind}, {id} and {type}, each as one
// subject token (subjectToken).
func eventSubject(template, kind, id, typ string) string {
	return strings.NewReplacer("{kind}", subjectToken(kind), "{id}", subjectToken(id), "{type}", subjectToken(typ)).Replace(template)
}

// subjectToken encodes s as one NATS subject token, injectively, so that
// two ids never share a subject and the id can be read back from it
// (parseToken). Letters, digits and - _ : @ = + , ~ ! ( ) pass unchanged;
// every other byte (the separators . * > and whitespace, '%' itself,
// non-ASCII bytes) becomes %XX, its value in upper-case hex, as in URLs;
// the empty string is a lone %. So "col.x" is col%2Ex, "col_x" stays col_x,
// "a b" is a%20b. docs/pubsub.md documents it for other NATS clients.
func subjectToken(s string) string {
	if s == "" {
		return "%"
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if !tokenSafe(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenSafe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

func tokenSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_:@=+,~!()", c) >= 0
}

// parseToken inverts subjectToken. It refuses a token subjectToken cannot
// produce (a bad escape, a byte that should have been escaped), so that
// each value has exactly one subject.
func parseToken(t string) (string, error) {
	if t == "%" {
		return "", nil
	}
	if t == "" {
		return "", errors.New("empty token")
	}
	b := make([]byte, 0, len(t))
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c != '%' {
			if !tokenSafe(c) {
				return "", fmt.Errorf("%q must be escaped as %%%02X", c, c)
			}
			b = append(b, c)
			continue
		}
		if i+2 >= len(t) {
			return "", fmt.Errorf("escape at byte %d is cut short: want %%XX", i)
		}
		v, ok := unhex(t[i+1], t[i+2])
		if !ok || tokenSafe(v) {
			return "", fmt.Errorf("bad escape %q: want %%XX in upper-case hex for a byte that must be escaped", t[i:i+3])
		}
		b = append(b, v)
		i += 2
	}
	return string(b), nil
}

func unhex(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'A' <= c && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}

// commandRequests serves commands sent as NATS requests to
// "<prefix>.<kind>.<id>", so that any NATS client can command entities. The
// body is the API's SendRequest, as JSON (the same JSON the HTTP API takes;
// kind and id come from the subject) or as protobuf with the header
// "Content-Type: application/protobuf". The reply is the API's
// SendResponse in the same encoding, or, on error, the JSON object
// {"code","message"} (as the HTTP API answers) with the header
// "Troupe-Error" set to the code.
type commandRequests struct {
	n    *Node
	sub  *nats.Subscription
	sem  chan struct{}
	wg   sync.WaitGroup
	stop chan struct{}
}

const maxConcurrentRequests = 1024

func (n *Node) startCommandRequests() error {
	cr := &commandRequests{n: n, sem: make(chan struct{}, maxConcurrentRequests), stop: make(chan struct{})}
	subject := n.cfg.CommandSubjectPrefix + ".>"
	sub, err := n.bus.Conn().QueueSubscribe(subject, "troupe-commands", cr.handle)
	if err != nil {
		return fmt.Errorf("node: subscribe %s: %w", subject, err)
	}
	cr.sub = sub
	n.onStop("nats commands", func(ctx context.Context) error {
		err := sub.Drain()
		close(cr.stop)
		cr.wg.Wait()
		return err
	})
	return nil
}

// handle runs on the subscription's goroutine; each command runs on its
// own goroutine, at most maxConcurrentRequests at once (then the
// subscription waits, and NATS buffers).
func (cr *commandRequests) handle(m *nats.Msg) {
	select {
	case cr.sem <- struct{}{}:
	case <-cr.stop:
		return
	}
	cr.wg.Add(1)
	go func() {
		defer func() { <-cr.sem; cr.wg.Done() }()
		cr.serve(m)
	}()
}

func (cr *commandRequests) serve(m *nats.Msg) {
	pb := m.Header.Get("Content-Type") == "application/protobuf"
	resp, err := cr.command(m, pb)
	if m.Reply == "" {
		return
	}
	out := nats.NewMsg(m.Reply)
	switch {
	case err != nil:
		code, msg, after := contract(err)
		out.Header.Set("Troupe-Error", code.String())
		if after > 0 {
			out.Header.Set("Retry-After", retryAfterSeconds(after))
		}
		out.Data, _ = json.Marshal(struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{code.String(), msg})
	case pb:
		out.Data, _ = proto.Marshal(resp)
		out.Header.Set("Content-Type", "application/protobuf")
	default:
		out.Data, _ = protojson.Marshal(resp)
	}
	_ = m.RespondMsg(out)
}

// command decodes a command request and runs it on the node's command path.
func (cr *commandRequests) command(m *nats.Msg, pb bool) (*troupev1.SendResponse, error) {
	if len(m.Data) > cr.n.cfg.MaxRequestBytes {
		// The HTTP API's limit, so that both accept the same requests.
		return nil, invalid("%s", tooLargeMessage(cr.n.cfg.MaxRequestBytes))
	}
	req, err := parseCommandRequest(cr.n.cfg.CommandSubjectPrefix, m.Subject, m.Data, pb)
	if err != nil {
		return nil, err
	}
	cmd, err := newCommand(req, traceContext(m.Header.Get("traceparent"), m.Header.Get("tracestate")))
	if err != nil {
		return nil, err
	}
	return cr.n.sendCommand(context.Background(), cmd)
}

// parseCommandRequest turns a command request's subject and body into the
// API's SendRequest, with kind and id from the subject.
func parseCommandRequest(prefix, subject string, body []byte, pb bool) (*troupev1.SendRequest, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	kt, it, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || kt == "" || it == "" || strings.Contains(it, ".") {
		return nil, invalid("subject %q: want %s.<kind>.<id>", subject, prefix)
	}
	// Kind and id are encoded as in event subjects: "col.x" is col%2Ex.
	kind, err := parseToken(kt)
	if err == nil && kind == "" {
		err = errors.New("empty")
	}
	if err != nil {
		return nil, invalid("subject %q: kind: %v", subject, err)
	}
	id, err := parseToken(it)
	if err == nil && id == "" {
		err = errors.New("empty")
	}
	if err != nil {
		return nil, invalid("subject %q: id: %v (see docs/pubsub.md, subject encoding)", subject, err)
	}
	// Decoded as the HTTP and gRPC paths decode (errors.go): the same
	// bodies are accepted and refused, with the same messages.
	req := &troupev1.SendRequest{}
	if pb {
		err = decodeRequestProto(body, req)
	} else {
		err = decodeRequestJSON(body, req)
	}
	if err != nil {
		return nil, err
	}
	if (req.GetKind() != "" && req.GetKind() != kind) || (req.GetId() != "" && req.GetId() != id) {
		return nil, invalid("body names %s/%s but the subject names %s/%s", req.GetKind(), req.GetId(), kind, id)
	}
	req.Kind, req.Id = kind, id
	return req, nil
}
