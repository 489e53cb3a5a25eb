package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/plugins"
)

// The client side of the error contract (docs/errors.md). Every transport
// shows an error as a code (actors/codes) and a message; contract computes
// both, once, for every error the node returns, so that the Connect API
// (HTTP JSON, gRPC, gRPC-Web), NATS command requests and the CLI agree.
// Messages name the field at fault and never show Go types or protobuf's
// decoder internals. The HTTP edges (errorBodies) give the errors that
// arise before a handler runs (unknown path, wrong method or content type,
// a body that does not decode or is too large) the same JSON shape.

// retryAfterError is a contract error with a hint of when the same request
// may succeed: a plugin's rate limit. HTTP shows it as Retry-After, NATS
// as the Retry-After header, and the message says it too.
type retryAfterError struct {
	err   *codes.Error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Message }
func (e *retryAfterError) Unwrap() error { return e.err }

// pluginFailure is a sidecar that failed (trapped, timed out, broke the
// ABI) under on_failure = "reject": the command was not applied, and the
// fault is the server's, not the client's.
type pluginFailure struct {
	plugin string
	err    error
}

func (e *pluginFailure) Error() string { return fmt.Sprintf("plugin %s: %v", e.plugin, e.err) }
func (e *pluginFailure) Unwrap() error { return e.err }

// contract classifies err for a client: its code, the message to show and
// the retry hint (0 when none).
func contract(err error) (code codes.Code, msg string, retryAfter time.Duration) {
	var (
		ra       *retryAfterError
		pf       *pluginFailure
		rejected *plugins.RejectedError
		call     *plugins.CallError
		decode   *actors.DecodeError
	)
	switch {
	case errors.As(err, &ra):
		return ra.err.Code, ra.err.Message, ra.after
	case errors.As(err, &pf):
		if errors.As(pf.err, &call) {
			pf.err = call.Err // its plugin is named already
		}
		if isTimeout(pf.err) {
			return codes.DeadlineExceeded, fmt.Sprintf("plugin %s did not decide in time (%v); the command was not applied: send it again", pf.plugin, cleanPluginError(pf.err)), 0
		}
		return codes.Unavailable, fmt.Sprintf("plugin %s failed (%v); the command was not applied: send it again", pf.plugin, cleanPluginError(pf.err)), 0
	case errors.As(err, &rejected):
		return codes.FailedPrecondition, err.Error(), 0
	case errors.Is(err, plugins.ErrNotFound):
		return codes.NotFound, strings.TrimPrefix(err.Error(), "plugins: "), 0
	case errors.As(err, &call):
		if isTimeout(call.Err) {
			return codes.DeadlineExceeded, fmt.Sprintf("plugin %s did not answer in time (%v)", call.Plugin, cleanPluginError(call.Err)), 0
		}
		return codes.Unavailable, fmt.Sprintf("plugin %s failed: %v", call.Plugin, cleanPluginError(call.Err)), 0
	case errors.Is(err, plugins.ErrClosed):
		return codes.Unavailable, "the node is stopping: plugins are closed", 0
	case errors.As(err, &decode):
		return codes.InvalidArgument, fmt.Sprintf("%s command %q: payload: %s", decode.Kind, decode.Type, jsonProblem(decode.Err)), 0
	}
	code = codes.Of(err)
	if code == codes.Internal && transient(err) {
		// The replicated journal's JetStream did not answer (a stream
		// electing its leader after a node died): nothing the client did.
		code = codes.Unavailable
	}
	if code == codes.Unknown {
		code = codes.Internal
	}
	return code, clientMessage(err.Error()), 0
}

func isTimeout(err error) bool {
	var be *plugins.BoundError
	return errors.As(err, &be) || errors.Is(err, plugins.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// cleanPluginError drops the package prefix of a plugin failure.
func cleanPluginError(err error) string {
	return strings.TrimPrefix(err.Error(), "plugins: ")
}

// clientMessage drops a package prefix ("actors: ", "journal: ").
func clientMessage(s string) string {
	for _, p := range []string{"actors: ", "journal: ", "node: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// jsonProblem describes a JSON decoding error of encoding/json in a
// client's terms: the field and what it should be, without Go types.
func jsonProblem(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return fmt.Sprintf("want %s, got %s", jsonKind(te.Type), article(te.Value))
		}
		return fmt.Sprintf("field %q: want %s, got %s", field, jsonKind(te.Type), article(te.Value))
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	s := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(s, "unknown field ") {
		return s + " (not a field of this command)"
	}
	return s
}

func article(v string) string {
	switch v {
	case "number", "string", "object", "array", "bool":
		if v == "bool" {
			return "true or false"
		}
		if v == "array" || v == "object" {
			return "an " + v
		}
		return "a " + v
	}
	return v
}

// jsonKind names a Go type as the JSON value it decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another value"
}

// toConnect is the Connect adapter of the error contract.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	code, msg, after := contract(err)
	ce := connect.NewError(connectCodes[code], errors.New(msg))
	if after > 0 {
		ce.Meta().Set("Retry-After", retryAfterSeconds(after))
	}
	return ce
}

// retryAfterSeconds is HTTP's Retry-After: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(max(1, (d+time.Second-1)/time.Second)), 10)
}

// protoProblem rewrites a protobuf decoder's error for a client: without
// the "proto:" prefix (which protobuf-go spells with a random space or
// non-breaking space, on purpose) and the Go type names.
var protoPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*`)

func protoProblem(err error) string {
	s := protoPrefix.ReplaceAllString(err.Error(), "")
	s = strings.ReplaceAll(s, "\u00a0", " ")
	switch {
	case strings.HasPrefix(s, "syntax error"):
		return "request body is not valid JSON: " + strings.TrimSpace(strings.TrimPrefix(s, "syntax error"))
	case s == "unexpected EOF" || strings.HasSuffix(s, "unexpected EOF"):
		return "request body ends too early (truncated JSON or protobuf)"
	case strings.Contains(s, "cannot parse invalid wire-format data"):
		return "request body is not a valid protobuf message"
	}
	return "request body " + s
}

// requestJSON is how every transport decodes a request's JSON: unknown
// top-level fields are ignored (as Connect does, so that older servers
// accept newer clients), an empty body is the empty message, and errors
// read as protoProblem says.
var requestJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

func decodeRequestJSON(data []byte, m proto.Message) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := requestJSON.Unmarshal(data, m); err != nil {
		return invalid("%s", protoProblem(err))
	}
	return nil
}

func decodeRequestProto(data []byte, m proto.Message) error {
	if err := proto.Unmarshal(data, m); err != nil {
		return invalid("%s", protoProblem(err))
	}
	return nil
}

// jsonCodec and protoCodec are Connect codecs that decode requests as
// decodeRequestJSON and decodeRequestProto do, so that the HTTP and gRPC
// paths accept and refuse exactly what NATS requests do, with the same
// messages.
type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }
func (jsonCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.Marshal(pm)
}
func (jsonCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	return decodeRequestJSON(data, pm)
}

type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }
func (protoCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return proto.Marshal(pm)
}
func (protoCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	return decodeRequestProto(data, pm)
}

// codecOptions installs the codecs on a Connect handler.
func codecOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(jsonCodec{"json"}),
		connect.WithCodec(jsonCodec{"json; charset=utf-8"}),
		connect.WithCodec(protoCodec{}),
	}
}

// errorBodies makes every error the API answers a JSON body with a code
// and a message, in the shape of Connect's errors, including those that
// arise before a Connect handler runs:
//   - an unknown path (404), a wrong method (405) and an unsupported
//     content type (415) get a JSON body saying what to send instead;
//   - a request body over the limit is invalid_argument (HTTP 413; gRPC
//     status 3), not Connect's resource_exhausted, which would tell the
//     client to retry the same request;
//   - Connect's "unmarshal message: " prefix is dropped (the codecs above
//     already word the rest).
//
// Pages of the dashboard (text/html) keep their HTML error pages.
func errorBodies(limit int, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ew := &errorWriter{ResponseWriter: w, r: r, limit: limit}
		next.ServeHTTP(ew, r)
		ew.finish()
	})
}

type errorWriter struct {
	http.ResponseWriter
	r      *http.Request
	limit  int
	wrote  bool
	mode   int // writePass, writeDrop, writeBuffer
	status int
	buf    bytes.Buffer
}

const (
	writePass = iota
	writeDrop
	writeBuffer
)

func (w *errorWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote, w.status = true, status
	ct := w.Header().Get("Content-Type")
	switch {
	case status >= 400 && strings.HasPrefix(ct, "application/json"):
		w.mode = writeBuffer // a Connect error body: rewritten in finish
		return
	case (status == http.StatusNotFound || status == http.StatusMethodNotAllowed ||
		status == http.StatusUnsupportedMediaType || status == http.StatusRequestEntityTooLarge) &&
		!strings.HasPrefix(ct, "text/html"):
		w.mode = writeDrop
		code, msg := edgeError(w.r, status, w.Header().Get("Allow"), w.limit)
		writeJSONError(w.ResponseWriter, status, code, msg)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *errorWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	switch w.mode {
	case writeDrop:
		return len(b), nil
	case writeBuffer:
		return w.buf.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *errorWriter) Flush() {
	if w.mode != writePass {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *errorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes a buffered Connect error body, rewritten, and rewrites a
// gRPC status in the trailers (or headers).
func (w *errorWriter) finish() {
	if w.mode == writeBuffer {
		var e struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Details json.RawMessage `json:"details,omitempty"`
		}
		status := w.status
		if json.Unmarshal(w.buf.Bytes(), &e) == nil && e.Code != "" {
			c, m, tooLarge := rewriteEdge(e.Code, e.Message, w.limit)
			if tooLarge {
				status = http.StatusRequestEntityTooLarge
			}
			if c != e.Code || m != e.Message {
				e.Code, e.Message = c, m
				b, _ := json.Marshal(e)
				w.buf.Reset()
				w.buf.Write(b)
			}
		}
		w.Header().Del("Content-Length")
		w.ResponseWriter.WriteHeader(status)
		_, _ = w.ResponseWriter.Write(w.buf.Bytes())
		return
	}
	if !strings.HasPrefix(w.r.Header.Get("Content-Type"), "application/grpc") {
		return
	}
	h := w.Header()
	for _, prefix := range []string{http.TrailerPrefix, ""} {
		stKey, msgKey := headerKey(h, prefix+"Grpc-Status"), headerKey(h, prefix+"Grpc-Message")
		if stKey == "" || msgKey == "" {
			continue
		}
		msg, err := url.PathUnescape(h.Get(msgKey))
		if err != nil {
			msg = h.Get(msgKey)
		}
		st := h.Get(stKey)
		code := codes.Unknown
		for c, gc := range connectCodes {
			if strconv.Itoa(int(gc)) == st {
				code = c
			}
		}
		if code == codes.Unknown {
			continue
		}
		c, m, _ := rewriteEdge(code.String(), msg, w.limit)
		if nc := codes.Parse(c); nc != code {
			h[stKey] = []string{strconv.Itoa(int(connectCodes[nc]))}
		}
		h[msgKey] = []string{grpcPercentEncode(m)}
	}
}

// headerKey finds a header's key whatever its case ("" when absent).
func headerKey(h http.Header, name string) string {
	for k := range h {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	return ""
}

// rewriteEdge rewrites the errors Connect itself raises before a handler
// runs: a body over the limit, and a body that does not decode (already
// worded by the codecs, behind Connect's prefix).
func rewriteEdge(code, msg string, limit int) (string, string, bool) {
	if code == "resource_exhausted" && strings.Contains(msg, "larger than configured max") {
		return "invalid_argument", tooLargeMessage(limit), true
	}
	if strings.HasPrefix(msg, "unmarshal message: ") {
		msg = strings.TrimPrefix(msg, "unmarshal message: ")
		if rest, ok := strings.CutPrefix(msg, "unmarshal into "); ok {
			// A decoder other than ours: keep only what follows the type.
			if _, after, ok := strings.Cut(rest, ": "); ok {
				msg = protoProblem(errors.New(after))
			}
		}
	}
	return code, msg, false
}

func tooLargeMessage(limit int) string {
	return fmt.Sprintf("request body is larger than the limit of %d bytes (the node's --max-request-bytes)", limit)
}

// edgeError is the code and message of an error the HTTP edge answers
// before any handler runs.
func edgeError(r *http.Request, status int, allow string, limit int) (string, string) {
	switch status {
	case http.StatusNotFound:
		return "not_found", fmt.Sprintf("no such path: %s %s (the API is a POST of JSON to /<service>/<method>, e.g. /troupe.v1.CommandService/Send; the dashboard is /ui/)", r.Method, r.URL.Path)
	case http.StatusMethodNotAllowed:
		if allow == "" {
			allow = "POST"
		}
		return "invalid_argument", fmt.Sprintf("method %s is not allowed on %s: use %s", r.Method, r.URL.Path, allow)
	case http.StatusUnsupportedMediaType:
		ct := r.Header.Get("Content-Type")
		return "invalid_argument", fmt.Sprintf("content type %q is not supported: send application/json (or application/proto, or gRPC)", ct)
	}
	return "invalid_argument", tooLargeMessage(limit)
}

// writeJSONError writes the contract's JSON error body.
func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]string{"code": code, "message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("X-Content-Type-Options")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// grpcPercentEncode encodes a grpc-message value (gRPC's HTTP/2 spec:
// bytes outside printable ASCII, and '%', are percent-encoded).
func grpcPercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
