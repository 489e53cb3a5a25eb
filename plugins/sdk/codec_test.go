package sdk

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// The guest codec is hand-written over protowire; these tests hold it to
// the generated code of proto/troupe/v1.

func sampleRequests() []*troupev1.PluginRequest {
	pctx := &troupev1.PluginContext{Node: "n1", Plugin: "p", PluginVersion: "abc123", Projection: "balances"}
	trace := &troupev1.TraceContext{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Tracestate: "k=v"}
	return []*troupev1.PluginRequest{
		{AbiVersion: 1, Hook: troupev1.Hook_HOOK_PROBE, Context: pctx},
		{AbiVersion: 1, Hook: troupev1.Hook_HOOK_COMMAND, Context: pctx, Message: &troupev1.PluginRequest_Command{Command: &troupev1.Command{
			CommandId: "c1", Kind: "account", EntityId: "acc-1", Type: "Deposit", IdempotencyKey: "idem",
			Payload: []byte(`{"amount":100}`), ContentType: "application/json", Trace: trace,
			Metadata: map[string]string{"a": "1", "": "empty key", "b": ""},
		}}},
		{AbiVersion: 1, Hook: troupev1.Hook_HOOK_EVENT, Context: pctx, Message: &troupev1.PluginRequest_Event{Event: &troupev1.Event{
			StreamId: "account/acc-1", Sequence: 7, GlobalPosition: 1 << 40, TimeUnixNano: -5, Type: "Deposited",
			Payload: []byte{0, 1, 2}, ContentType: "application/protobuf", Tags: []string{"t1", "t2"}, Metadata: map[string]string{"x": "y"},
		}}},
		{AbiVersion: 1, Hook: troupev1.Hook_HOOK_TOPIC, Message: &troupev1.PluginRequest_Topic{Topic: &troupev1.TopicMessage{
			Topic: "orders.created", Payload: []byte("hi"), ContentType: "text/plain", Metadata: map[string]string{"m": "n"}, MessageId: "m1", Trace: trace,
		}}},
		{AbiVersion: 1, Hook: troupev1.Hook_HOOK_CALL, Message: &troupev1.PluginRequest_Call{Call: &troupev1.AmbassadorCall{
			Operation: "charge", Payload: []byte(`{}`), ContentType: "application/json", Metadata: map[string]string{"k": "v"}, Trace: trace,
		}}},
	}
}

func TestDecodeRequestMatchesGenerated(t *testing.T) {
	for _, pr := range sampleRequests() {
		t.Run(pr.GetHook().String(), func(t *testing.T) {
			b, err := proto.Marshal(pr)
			if err != nil {
				t.Fatal(err)
			}
			r, err := DecodeRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			if r.ABIVersion != pr.GetAbiVersion() || int32(r.Hook) != int32(pr.GetHook()) {
				t.Fatalf("header = %d %v", r.ABIVersion, r.Hook)
			}
			pc := pr.GetContext()
			if r.Context != (Context{Node: pc.GetNode(), Plugin: pc.GetPlugin(), PluginVersion: pc.GetPluginVersion(), Projection: pc.GetProjection()}) {
				t.Fatalf("context = %+v", r.Context)
			}
			if c := pr.GetCommand(); c != nil {
				want := &Command{ID: c.CommandId, Kind: c.Kind, EntityID: c.EntityId, Type: c.Type, IdempotencyKey: c.IdempotencyKey,
					Payload: c.Payload, ContentType: c.ContentType, Trace: TraceContext{c.Trace.Traceparent, c.Trace.Tracestate}, Metadata: c.Metadata}
				if !reflect.DeepEqual(r.Command, want) {
					t.Fatalf("command = %+v\nwant %+v", r.Command, want)
				}
			}
			if e := pr.GetEvent(); e != nil {
				want := &Event{StreamID: e.StreamId, Sequence: e.Sequence, GlobalPosition: e.GlobalPosition, TimeUnixNano: e.TimeUnixNano,
					Type: e.Type, Payload: e.Payload, ContentType: e.ContentType, Tags: e.Tags, Metadata: e.Metadata}
				if !reflect.DeepEqual(r.Event, want) {
					t.Fatalf("event = %+v\nwant %+v", r.Event, want)
				}
			}
			if m := pr.GetTopic(); m != nil {
				want := &TopicMessage{Topic: m.Topic, Payload: m.Payload, ContentType: m.ContentType, Metadata: m.Metadata, MessageID: m.MessageId,
					Trace: TraceContext{m.Trace.Traceparent, m.Trace.Tracestate}}
				if !reflect.DeepEqual(r.Topic, want) {
					t.Fatalf("topic = %+v\nwant %+v", r.Topic, want)
				}
			}
			if c := pr.GetCall(); c != nil {
				want := &Call{Operation: c.Operation, Payload: c.Payload, ContentType: c.ContentType, Metadata: c.Metadata,
					Trace: TraceContext{c.Trace.Traceparent, c.Trace.Tracestate}}
				if !reflect.DeepEqual(r.Call, want) {
					t.Fatalf("call = %+v\nwant %+v", r.Call, want)
				}
			}
		})
	}
}

func TestVerdictMatchesGenerated(t *testing.T) {
	tests := []struct {
		name string
		v    Verdict
		want *troupev1.Verdict
	}{
		{"allow", Allow(), &troupev1.Verdict{}},
		{"reject", Reject("no"), &troupev1.Verdict{Reject: true, Reason: "no"}},
		{"fail", Fail(nil), &troupev1.Verdict{Error: "unknown error"}},
		{"replace", Allow().Replace([]byte("new"), "text/plain").Annotate("k", "v").Annotate("k2", ""),
			&troupev1.Verdict{Replace: &troupev1.Replacement{Payload: []byte("new"), ContentType: "text/plain"}, Metadata: map[string]string{"k": "v", "k2": ""}}},
		{"replace empty", Allow().Replace(nil, ""), &troupev1.Verdict{Replace: &troupev1.Replacement{}}},
		{"respond", Respond(Reply{Payload: []byte("{}"), ContentType: "application/json", Metadata: map[string]string{"id": "1"}}),
			&troupev1.Verdict{Reply: &troupev1.AmbassadorReply{Payload: []byte("{}"), ContentType: "application/json", Metadata: map[string]string{"id": "1"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendVerdict(nil, tt.v)
			var got troupev1.Verdict
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, tt.want) {
				t.Fatalf("got %v\nwant %v", &got, tt.want)
			}
			back, err := DecodeVerdict(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(AppendVerdict(nil, back), b) && len(tt.v.metadata) < 2 { // map order varies
				t.Fatalf("round trip differs")
			}
		})
	}
}

func TestHTTPMatchesGenerated(t *testing.T) {
	req := &HTTPRequest{Method: "POST", URL: "http://h/x", Headers: map[string]string{"A": "b"}, Body: []byte("body"), TimeoutMs: 250}
	var got troupev1.HttpRequest
	if err := proto.Unmarshal(AppendHTTPRequest(nil, req), &got); err != nil {
		t.Fatal(err)
	}
	want := &troupev1.HttpRequest{Method: "POST", Url: "http://h/x", Headers: map[string]string{"A": "b"}, Body: []byte("body"), TimeoutMs: 250}
	if !proto.Equal(&got, want) {
		t.Fatalf("got %v", &got)
	}
	b, _ := proto.Marshal(&troupev1.HttpResponse{Status: 201, Headers: map[string]string{"X": "y"}, Body: []byte("ok")})
	resp, err := DecodeHTTPResponse(b)
	if err != nil || resp.Status != 201 || resp.Headers["X"] != "y" || string(resp.Body) != "ok" {
		t.Fatalf("resp = %+v, %v", resp, err)
	}
	b, _ = proto.Marshal(&troupev1.HttpResponse{Error: "egress denied"})
	if _, err := DecodeHTTPResponse(b); err == nil || err.Error() != "http_call: egress denied" {
		t.Fatalf("err = %v", err)
	}
}

func TestDispatch(t *testing.T) {
	defer func() { onCommand = nil }()
	OnCommand(func(_ *Context, c *Command) Verdict {
		if c.Type == "Boom" {
			panic("boom")
		}
		return Reject("saw " + c.Type)
	})
	enc := func(typ string) []byte {
		b, _ := proto.Marshal(&troupev1.PluginRequest{AbiVersion: 1, Hook: troupev1.Hook_HOOK_COMMAND,
			Message: &troupev1.PluginRequest_Command{Command: &troupev1.Command{Type: typ}}})
		return b
	}
	decode := func(b []byte) *troupev1.Verdict {
		var v troupev1.Verdict
		if err := proto.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return &v
	}
	if v := decode(Dispatch(enc("Deposit"))); !v.Reject || v.Reason != "saw Deposit" {
		t.Fatalf("verdict = %v", v)
	}
	if v := decode(Dispatch(enc("Boom"))); v.Error == "" || v.Reject {
		t.Fatalf("panic verdict = %v", v)
	}
	probe, _ := proto.Marshal(&troupev1.PluginRequest{AbiVersion: 1, Hook: troupev1.Hook_HOOK_PROBE})
	if b := Dispatch(probe); len(b) != 0 {
		t.Fatalf("probe verdict = %x, want empty", b)
	}
	v2, _ := proto.Marshal(&troupev1.PluginRequest{AbiVersion: 2, Hook: troupev1.Hook_HOOK_COMMAND})
	if v := decode(Dispatch(v2)); v.Error == "" {
		t.Fatalf("ABI 2 accepted: %v", v)
	}
	if v := decode(Dispatch([]byte{0xff})); v.Error == "" {
		t.Fatalf("garbage accepted: %v", v)
	}
}

// FuzzDecodeRequest: the guest decoder never panics, and accepts whatever
// the generated decoder accepts.
func FuzzDecodeRequest(f *testing.F) {
	for _, pr := range sampleRequests() {
		b, _ := proto.Marshal(pr)
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := DecodeRequest(b)
		var pr troupev1.PluginRequest
		if perr := (proto.UnmarshalOptions{}).Unmarshal(b, &pr); perr == nil && err != nil {
			// The generated decoder is stricter on strings (UTF-8) but
			// never looser on structure.
			t.Fatalf("generated decoder accepts, sdk rejects: %v", err)
		}
		_ = Dispatch(b)
	})
}

func FuzzDecodeVerdict(f *testing.F) {
	f.Add(AppendVerdict(nil, Reject("x").Annotate("a", "b")))
	f.Add(AppendVerdict(nil, Respond(Reply{Payload: []byte("p")})))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVerdict(b)
		if err != nil {
			return
		}
		var got troupev1.Verdict
		if err := proto.Unmarshal(AppendVerdict(nil, v), &got); err != nil && !isUTF8Error(err) {
			t.Fatalf("re-encoded verdict does not decode: %v", err)
		}
	})
}

func isUTF8Error(err error) bool {
	return err != nil && (contains(err.Error(), "UTF-8") || contains(err.Error(), "utf-8"))
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
