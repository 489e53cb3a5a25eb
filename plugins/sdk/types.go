package sdk

import (
	"bytes"
	"strings"
)

// Hook says why the host called the plugin (troupe.v1.Hook).
type Hook int32

const (
	HookUnspecified Hook = 0
	HookCommand     Hook = 1
	HookEvent       Hook = 2
	HookTopic       Hook = 3
	HookCall        Hook = 4
	HookProbe       Hook = 5
)

func (h Hook) String() string {
	switch h {
	case HookCommand:
		return "command"
	case HookEvent:
		return "event"
	case HookTopic:
		return "topic"
	case HookCall:
		return "call"
	case HookProbe:
		return "probe"
	}
	return "unspecified"
}

// Context describes where a call happens (troupe.v1.PluginContext).
type Context struct {
	Node          string
	Plugin        string
	PluginVersion string
	// Projection is set for event hooks.
	Projection string
}

// TraceContext is a W3C trace context (troupe.v1.TraceContext).
type TraceContext struct {
	Traceparent string
	Tracestate  string
}

// Command is a command on its way to an entity (troupe.v1.Command).
type Command struct {
	ID             string // command_id
	Kind           string
	EntityID       string
	Type           string
	IdempotencyKey string
	Payload        []byte
	ContentType    string
	Trace          TraceContext
	Metadata       map[string]string
}

// Event is an event on its way to a projection (troupe.v1.Event).
type Event struct {
	StreamID       string
	Sequence       uint64
	GlobalPosition uint64
	TimeUnixNano   int64
	Type           string
	Payload        []byte
	ContentType    string
	Tags           []string
	Metadata       map[string]string
}

// TopicMessage is a message on its way to a topic's subscribers
// (troupe.v1.TopicMessage).
type TopicMessage struct {
	Topic       string
	Payload     []byte
	ContentType string
	Metadata    map[string]string
	MessageID   string
	Trace       TraceContext
}

// Call is what an actor asks of an ambassador (troupe.v1.AmbassadorCall).
type Call struct {
	Operation   string
	Payload     []byte
	ContentType string
	Metadata    map[string]string
	Trace       TraceContext
}

// Reply is an ambassador's answer (troupe.v1.AmbassadorReply).
type Reply struct {
	Payload     []byte
	ContentType string
	Metadata    map[string]string
}

// Request is one decoded call of the plugin (troupe.v1.PluginRequest).
// Exactly one of Command, Event, Topic and Call is set, per Hook (none for
// HookProbe).
type Request struct {
	ABIVersion uint32
	Hook       Hook
	Context    Context
	Command    *Command
	Event      *Event
	Topic      *TopicMessage
	Call       *Call
}

// Verdict is a plugin's decision (troupe.v1.Verdict). The zero Verdict
// allows the message unchanged. Build one with Allow, Reject, Fail or
// Respond and refine it with Replace and Annotate.
type Verdict struct {
	reject   bool
	reason   string
	replace  bool
	payload  []byte
	ctype    string
	metadata map[string]string
	reply    *Reply
	err      string
}

// Allow lets the message through unchanged.
func Allow() Verdict { return Verdict{} }

// Reject stops the message; reason is returned to its sender.
func Reject(reason string) Verdict { return Verdict{reject: true, reason: reason} }

// Fail reports that the plugin could not decide; the host applies the
// plugin's failure policy (reject or pass) and counts a failure.
func Fail(err error) Verdict {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	return Verdict{err: msg}
}

// Respond is an ambassador's successful answer to a Call.
func Respond(r Reply) Verdict { return Verdict{reply: &r} }

// Replace replaces the message's payload; an empty contentType keeps the
// current one.
func (v Verdict) Replace(payload []byte, contentType string) Verdict {
	v.replace, v.payload, v.ctype = true, payload, contentType
	return v
}

// Annotate adds (or overwrites) a metadata entry of the message.
func (v Verdict) Annotate(key, value string) Verdict {
	m := make(map[string]string, len(v.metadata)+1)
	for k, x := range v.metadata {
		m[k] = x
	}
	m[key] = value
	v.metadata = m
	return v
}

// Rejected reports whether v rejects, and why.
func (v Verdict) Rejected() (bool, string) { return v.reject, v.reason }

// HTTPRequest is an outbound request made through the host
// (troupe.v1.HttpRequest).
type HTTPRequest struct {
	Method    string // empty means GET
	URL       string
	Headers   map[string]string
	Body      []byte
	TimeoutMs uint32 // 0: the call's deadline
}

// HTTPResponse is the host's answer to an HTTPRequest
// (troupe.v1.HttpResponse).
type HTTPResponse struct {
	Status  int32
	Headers map[string]string
	Body    []byte
}

// Clone returns a deep copy of c that stays valid after the handler returns.
func (c *Command) Clone() *Command {
	n := &Command{
		ID: strings.Clone(c.ID), Kind: strings.Clone(c.Kind), EntityID: strings.Clone(c.EntityID),
		Type: strings.Clone(c.Type), IdempotencyKey: strings.Clone(c.IdempotencyKey),
		Payload: bytes.Clone(c.Payload), ContentType: strings.Clone(c.ContentType),
		Trace:    TraceContext{strings.Clone(c.Trace.Traceparent), strings.Clone(c.Trace.Tracestate)},
		Metadata: cloneMap(c.Metadata),
	}
	return n
}

// Clone returns a deep copy of e that stays valid after the handler returns.
func (e *Event) Clone() *Event {
	n := *e
	n.StreamID, n.Type, n.ContentType = strings.Clone(e.StreamID), strings.Clone(e.Type), strings.Clone(e.ContentType)
	n.Payload = bytes.Clone(e.Payload)
	n.Tags = nil
	for _, t := range e.Tags {
		n.Tags = append(n.Tags, strings.Clone(t))
	}
	n.Metadata = cloneMap(e.Metadata)
	return &n
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	n := make(map[string]string, len(m))
	for k, v := range m {
		n[strings.Clone(k)] = strings.Clone(v)
	}
	return n
}
