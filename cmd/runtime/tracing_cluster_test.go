package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/clustertest"
	"github.com/troupe-dev/troupe/cluster/node"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// otlpSpan is one span an OTLP receiver got, with the node that sent it
// (its resource's service.instance.id).
type otlpSpan struct {
	node string
	*tracepb.Span
}

func (s otlpSpan) traceID() string  { return hex.EncodeToString(s.TraceId) }
func (s otlpSpan) spanID() string   { return hex.EncodeToString(s.SpanId) }
func (s otlpSpan) parentID() string { return hex.EncodeToString(s.ParentSpanId) }

// attr is the value of a string, bool or int attribute ("" when absent).
func (s otlpSpan) attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(v.BoolValue)
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10)
		}
		return fmt.Sprint(kv.GetValue())
	}
	return ""
}

func (s otlpSpan) String() string {
	return fmt.Sprintf("%s %s@%s parent %s", s.Name, s.spanID(), s.node, s.parentID())
}

// otlpReceiver is an in-process OTLP/HTTP trace receiver: it decodes
// every export (protobuf, gzip or not) and keeps the spans.
type otlpReceiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	spans []otlpSpan
	bad   []string // requests it could not decode
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	fail := func(why string, code int) {
		r.mu.Lock()
		r.bad = append(r.bad, why)
		r.mu.Unlock()
		http.Error(w, why, code)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		fail(req.Method+" "+req.URL.Path, http.StatusNotFound)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		fail("content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			fail("gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		fail("read: "+err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &export); err != nil {
		fail("decode: "+err.Error(), http.StatusBadRequest)
		return
	}
	var got []otlpSpan
	for _, rs := range export.ResourceSpans {
		node := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.instance.id" {
				node = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				got = append(got, otlpSpan{node: node, Span: s})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received so far of one trace, and the requests
// the receiver could not decode.
func (r *otlpReceiver) trace(id string) ([]otlpSpan, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpSpan
	for _, s := range r.spans {
		if s.traceID() == id {
			out = append(out, s)
		}
	}
	return out, append([]string(nil), r.bad...)
}

// TestTraceAcrossTwoNodes sends a command to the node that does not own
// its entity, with both nodes exporting OTLP/HTTP to an in-process
// receiver, and checks that it makes one trace across the two processes:
// the sender's command and forward spans, and under the forward the
// owner's command, entity turn and journal append.
func TestTraceAcrossTwoNodes(t *testing.T) {
	multiProcess(t)
	recv := newOTLPReceiver(t)
	c := startCluster(t, clustertest.Options{Nodes: 2, Env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.srv.URL,
		"OTEL_BSP_SCHEDULE_DELAY=100", // ms: export soon after a span ends
	}})
	waitServed(t, c, []int{0, 1}, time.Now(), 60*time.Second)
	sender, owner := c.Node(0), c.Node(1)

	// An account the second node owns, sent to the first.
	served, err := servedBy(context.Background(), c, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	for i := 0; i < 1000 && id == ""; i++ {
		cand := fmt.Sprintf("traced-%d", i)
		if nodes := served[uint32(actors.ShardOf("account", cand, testShards))]; len(nodes) == 1 && nodes[0] == owner.ID {
			id = cand
		}
	}
	if id == "" {
		t.Fatalf("no account of the first 1000 is owned by %s; shards: %v", owner.ID, served)
	}

	const callerTrace, callerSpan = "5a1e0c6b2f8d4e7a9c3b1d0f2e4a6c8b", "1f2e3d4c5b6a7988"
	cl := troupev1connect.NewCommandServiceClient(c.HTTPClient(), sender.HTTPURL())
	st, _ := structpb.NewStruct(map[string]any{"owner": "ada"})
	req := connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: id, Type: "Open", Payload: st})
	req.Header().Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cl.Send(ctx, req); err != nil {
		t.Fatalf("Open %s via %s: %v", id, sender.ID, err)
	}

	// Wait (bounded) until both processes have exported the spans asked
	// for; the batch processor exports every 100 ms.
	want := []string{node.SpanCommand, node.SpanForward, actors.SpanEntityTurn, actors.SpanJournalAppend}
	var spans []otlpSpan
	clustertest.Eventually(t, 15*time.Second, "the command's spans from both nodes", func() error {
		var bad []string
		spans, bad = recv.trace(callerTrace)
		if len(bad) > 0 {
			t.Fatalf("the receiver could not decode an export: %v", bad)
		}
		count := map[string]int{}
		for _, s := range spans {
			count[s.Name]++
		}
		for _, name := range want {
			n := 1
			if name == node.SpanCommand {
				n = 2 // one on each node
			}
			if count[name] < n {
				return fmt.Errorf("%d %s spans in the trace, want %d; have %v", count[name], name, n, spans)
			}
		}
		// And every span's parent too (a span often ends, and is
		// exported, before its parent: the events publisher's publish
		// span before its apply span).
		ids := map[string]bool{callerSpan: true}
		for _, s := range spans {
			ids[s.spanID()] = true
		}
		for _, s := range spans {
			if !ids[s.parentID()] {
				return fmt.Errorf("the parent %s of %v is not exported yet", s.parentID(), s)
			}
		}
		return nil
	})

	one := func(name, nodeID string) otlpSpan {
		t.Helper()
		var found []otlpSpan
		for _, s := range spans {
			if s.Name == name && s.node == nodeID {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d %s spans from %s in the trace, want 1; the trace: %v", len(found), name, nodeID, spans)
		}
		return found[0]
	}
	byID := map[string]otlpSpan{}
	for _, s := range spans {
		byID[s.spanID()] = s
	}
	// ancestors lists a span's parents up to the caller's span.
	ancestors := func(s otlpSpan) []string {
		var out []string
		for p, ok := byID[s.parentID()]; ok && len(out) < len(spans); p, ok = byID[p.parentID()] {
			out = append(out, p.spanID())
		}
		return out
	}
	parentIs := func(child, parent otlpSpan) {
		t.Helper()
		if child.parentID() != parent.spanID() {
			t.Errorf("%v: parent %s, want %v", child, child.parentID(), parent)
		}
	}

	sendCmd := one(node.SpanCommand, sender.ID)
	forward := one(node.SpanForward, sender.ID)
	ownerCmd := one(node.SpanCommand, owner.ID)
	turn := one(actors.SpanEntityTurn, owner.ID)
	appendSpan := one(actors.SpanJournalAppend, owner.ID)

	// The sender: its command is the caller's child, the forward its.
	if sendCmd.parentID() != callerSpan || sendCmd.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("%v (kind %v): want a server span, the child of the caller's %s", sendCmd, sendCmd.Kind, callerSpan)
	}
	parentIs(forward, sendCmd)
	if forward.Kind != tracepb.Span_SPAN_KIND_CLIENT || forward.attr("troupe.owner") != owner.ID || forward.attr(actors.AttrEntity) != id {
		t.Errorf("%v: kind %v, owner %q, entity %q; want a client span to %s for %s",
			forward, forward.Kind, forward.attr("troupe.owner"), forward.attr(actors.AttrEntity), owner.ID, id)
	}
	// The owner: its command is the forward's child, and the turn and
	// the append are below it.
	parentIs(ownerCmd, forward)
	if ownerCmd.attr("troupe.forwarded") != "true" {
		t.Errorf("%v: troupe.forwarded = %q, want true", ownerCmd, ownerCmd.attr("troupe.forwarded"))
	}
	parentIs(appendSpan, turn)
	if a := ancestors(turn); len(a) == 0 || a[0] != ownerCmd.spanID() {
		t.Errorf("%v: ancestors %v, want the owner's command %s first", turn, a, ownerCmd.spanID())
	}
	// Every span the owner recorded in this trace descends from the
	// forward: none hangs off the caller or starts a root of its own.
	for _, s := range spans {
		if s.node != owner.ID {
			continue
		}
		found := false
		for _, a := range ancestors(s) {
			if a == forward.spanID() {
				found = true
			}
		}
		if !found {
			t.Errorf("%v from the owner is not below the forward %s; ancestors %v", s, forward.spanID(), ancestors(s))
		}
	}
	// No span of this command went to another trace: the owner's entity
	// turn for this account is the one above.
	if turn.attr(actors.AttrStream) != "account/"+id {
		t.Errorf("%v: stream %q, want account/%s", turn, turn.attr(actors.AttrStream), id)
	}
	recv.mu.Lock()
	for _, s := range recv.spans {
		if s.Name == actors.SpanEntityTurn && s.attr(actors.AttrStream) == "account/"+id && s.traceID() != callerTrace {
			t.Errorf("a turn of %s in another trace: %v (trace %s)", id, s, s.traceID())
		}
	}
	recv.mu.Unlock()
	if t.Failed() {
		t.Logf("the trace: %v", spans)
	}
}
