package sdk

import (
	"fmt"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// The guest decodes and encodes the ABI messages with protowire only: the
// full protobuf runtime would add megabytes and milliseconds of start-up to
// every Go plugin. Field numbers follow proto/troupe/v1/{plugin,envelope}.proto;
// a host-side test checks both against the generated code.

// decoder walks the fields of one message. Strings and byte slices alias
// the buffer it reads: allocation dominates the cost of a call in a Go
// guest, so the call path allocates nothing.
type decoder struct {
	b   []byte
	err error
}

// next reads the next field's tag; false at the end or on error.
func (d *decoder) next() (protowire.Number, protowire.Type, bool) {
	if d.err != nil || len(d.b) == 0 {
		return 0, 0, false
	}
	num, typ, n := protowire.ConsumeTag(d.b)
	if n < 0 {
		d.err = protowire.ParseError(n)
		return 0, 0, false
	}
	d.b = d.b[n:]
	return num, typ, true
}

func (d *decoder) skip(num protowire.Number, typ protowire.Type) {
	n := protowire.ConsumeFieldValue(num, typ, d.b)
	if n < 0 {
		d.err = protowire.ParseError(n)
		d.b = nil
		return
	}
	d.b = d.b[n:]
}

// raw reads a length-delimited value; a field of another wire type is
// skipped and yields nil.
func (d *decoder) raw(num protowire.Number, typ protowire.Type) []byte {
	if typ != protowire.BytesType {
		d.skip(num, typ)
		return nil
	}
	v, n := protowire.ConsumeBytes(d.b)
	if n < 0 {
		d.err = protowire.ParseError(n)
		d.b = nil
		return nil
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(num protowire.Number, typ protowire.Type) string {
	v := d.raw(num, typ)
	if len(v) == 0 {
		return ""
	}
	return unsafe.String(&v[0], len(v))
}

func (d *decoder) varint(num protowire.Number, typ protowire.Type) uint64 {
	if typ != protowire.VarintType {
		d.skip(num, typ)
		return 0
	}
	v, n := protowire.ConsumeVarint(d.b)
	if n < 0 {
		d.err = protowire.ParseError(n)
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// sub returns a decoder for an embedded message.
func (d *decoder) sub(num protowire.Number, typ protowire.Type) decoder {
	return decoder{b: d.raw(num, typ)}
}

// mapEntry reads one map<string, string> entry into *m.
func (d *decoder) mapEntry(num protowire.Number, typ protowire.Type, m *map[string]string) {
	e := d.sub(num, typ)
	var k, v string
	for n, t, ok := e.next(); ok; n, t, ok = e.next() {
		switch n {
		case 1:
			k = e.str(n, t)
		case 2:
			v = e.str(n, t)
		default:
			e.skip(n, t)
		}
	}
	if e.err != nil {
		d.err = e.err
		return
	}
	if *m == nil {
		*m = make(map[string]string)
	}
	(*m)[k] = v
}

func (d *decoder) fail(e *decoder) {
	if e.err != nil && d.err == nil {
		d.err = e.err
	}
}

// request is a Request with room for its message, allocated at once.
type request struct {
	Request
	cmd   Command
	event Event
	topic TopicMessage
	call  Call
}

// DecodeRequest decodes a troupe.v1.PluginRequest. The result does not
// alias b (its strings share one private copy of b).
func DecodeRequest(b []byte) (*Request, error) {
	r := &request{}
	if err := decodeRequest(r, append([]byte(nil), b...)); err != nil {
		return nil, err
	}
	return &r.Request, nil
}

// decodeRequest decodes b into r, which must be zero; strings and payloads
// alias b.
func decodeRequest(r *request, b []byte) error {
	d := decoder{b: b}
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			r.ABIVersion = uint32(d.varint(num, typ))
		case 2:
			r.Hook = Hook(int32(d.varint(num, typ)))
		case 3:
			e := d.sub(num, typ)
			decodeContext(&e, &r.Context)
			d.fail(&e)
		case 10:
			e := d.sub(num, typ)
			r.Command, r.Event, r.Topic, r.Call = &r.cmd, nil, nil, nil
			decodeCommand(&e, &r.cmd)
			d.fail(&e)
		case 11:
			e := d.sub(num, typ)
			r.Command, r.Event, r.Topic, r.Call = nil, &r.event, nil, nil
			decodeEvent(&e, &r.event)
			d.fail(&e)
		case 12:
			e := d.sub(num, typ)
			r.Command, r.Event, r.Topic, r.Call = nil, nil, &r.topic, nil
			decodeTopic(&e, &r.topic)
			d.fail(&e)
		case 13:
			e := d.sub(num, typ)
			r.Command, r.Event, r.Topic, r.Call = nil, nil, nil, &r.call
			decodeCall(&e, &r.call)
			d.fail(&e)
		default:
			d.skip(num, typ)
		}
	}
	if d.err != nil {
		return fmt.Errorf("sdk: decode request: %w", d.err)
	}
	return nil
}

func decodeContext(d *decoder, c *Context) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			c.Node = d.str(num, typ)
		case 2:
			c.Plugin = d.str(num, typ)
		case 3:
			c.PluginVersion = d.str(num, typ)
		case 4:
			c.Projection = d.str(num, typ)
		default:
			d.skip(num, typ)
		}
	}
}

func decodeTrace(d *decoder, t *TraceContext) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			t.Traceparent = d.str(num, typ)
		case 2:
			t.Tracestate = d.str(num, typ)
		default:
			d.skip(num, typ)
		}
	}
}

func decodeCommand(d *decoder, c *Command) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			c.ID = d.str(num, typ)
		case 2:
			c.Kind = d.str(num, typ)
		case 3:
			c.EntityID = d.str(num, typ)
		case 4:
			c.Type = d.str(num, typ)
		case 5:
			c.IdempotencyKey = d.str(num, typ)
		case 6:
			c.Payload = d.raw(num, typ)
		case 7:
			c.ContentType = d.str(num, typ)
		case 8:
			e := d.sub(num, typ)
			decodeTrace(&e, &c.Trace)
			d.fail(&e)
		case 9:
			d.mapEntry(num, typ, &c.Metadata)
		default:
			d.skip(num, typ)
		}
	}
}

func decodeEvent(d *decoder, e *Event) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			e.StreamID = d.str(num, typ)
		case 2:
			e.Sequence = d.varint(num, typ)
		case 3:
			e.GlobalPosition = d.varint(num, typ)
		case 4:
			e.TimeUnixNano = int64(d.varint(num, typ))
		case 5:
			e.Type = d.str(num, typ)
		case 6:
			e.Payload = d.raw(num, typ)
		case 7:
			e.ContentType = d.str(num, typ)
		case 8:
			if typ == protowire.BytesType {
				e.Tags = append(e.Tags, d.str(num, typ))
			} else {
				d.skip(num, typ)
			}
		case 9:
			d.mapEntry(num, typ, &e.Metadata)
		default:
			d.skip(num, typ)
		}
	}
}

func decodeTopic(d *decoder, m *TopicMessage) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			m.Topic = d.str(num, typ)
		case 2:
			m.Payload = d.raw(num, typ)
		case 3:
			m.ContentType = d.str(num, typ)
		case 4:
			d.mapEntry(num, typ, &m.Metadata)
		case 5:
			m.MessageID = d.str(num, typ)
		case 6:
			e := d.sub(num, typ)
			decodeTrace(&e, &m.Trace)
			d.fail(&e)
		default:
			d.skip(num, typ)
		}
	}
}

func decodeCall(d *decoder, c *Call) {
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			c.Operation = d.str(num, typ)
		case 2:
			c.Payload = d.raw(num, typ)
		case 3:
			c.ContentType = d.str(num, typ)
		case 4:
			d.mapEntry(num, typ, &c.Metadata)
		case 5:
			e := d.sub(num, typ)
			decodeTrace(&e, &c.Trace)
			d.fail(&e)
		default:
			d.skip(num, typ)
		}
	}
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendMap(b []byte, num protowire.Number, m map[string]string) []byte {
	for k, v := range m {
		n := 0
		if k != "" {
			n += protowire.SizeTag(1) + protowire.SizeBytes(len(k))
		}
		if v != "" {
			n += protowire.SizeTag(2) + protowire.SizeBytes(len(v))
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendString(b, 1, k)
		b = appendString(b, 2, v)
	}
	return b
}

// AppendVerdict appends v encoded as a troupe.v1.Verdict.
func AppendVerdict(b []byte, v Verdict) []byte {
	if v.reject {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	b = appendString(b, 2, v.reason)
	if v.replace {
		var r []byte
		r = appendBytes(r, 1, v.payload)
		r = appendString(r, 2, v.ctype)
		b = appendBytes(b, 3, r)
	}
	b = appendMap(b, 4, v.metadata)
	if v.reply != nil {
		var r []byte
		if len(v.reply.Payload) > 0 {
			r = appendBytes(r, 1, v.reply.Payload)
		}
		r = appendString(r, 2, v.reply.ContentType)
		r = appendMap(r, 3, v.reply.Metadata)
		b = appendBytes(b, 5, r)
	}
	b = appendString(b, 6, v.err)
	return b
}

// DecodeVerdict decodes a troupe.v1.Verdict (for tests of plugins).
func DecodeVerdict(b []byte) (Verdict, error) {
	var v Verdict
	d := decoder{b: append([]byte(nil), b...)}
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			v.reject = d.varint(num, typ) != 0
		case 2:
			v.reason = d.str(num, typ)
		case 3:
			v.replace = true
			e := d.sub(num, typ)
			for n, t, ok := e.next(); ok; n, t, ok = e.next() {
				switch n {
				case 1:
					v.payload = e.raw(n, t)
				case 2:
					v.ctype = e.str(n, t)
				default:
					e.skip(n, t)
				}
			}
			d.fail(&e)
		case 4:
			d.mapEntry(num, typ, &v.metadata)
		case 5:
			v.reply = &Reply{}
			e := d.sub(num, typ)
			for n, t, ok := e.next(); ok; n, t, ok = e.next() {
				switch n {
				case 1:
					v.reply.Payload = e.raw(n, t)
				case 2:
					v.reply.ContentType = e.str(n, t)
				case 3:
					e.mapEntry(n, t, &v.reply.Metadata)
				default:
					e.skip(n, t)
				}
			}
			d.fail(&e)
		case 6:
			v.err = d.str(num, typ)
		default:
			d.skip(num, typ)
		}
	}
	if d.err != nil {
		return Verdict{}, fmt.Errorf("sdk: decode verdict: %w", d.err)
	}
	return v, nil
}

// AppendHTTPRequest appends r encoded as a troupe.v1.HttpRequest.
func AppendHTTPRequest(b []byte, r *HTTPRequest) []byte {
	b = appendString(b, 1, r.Method)
	b = appendString(b, 2, r.URL)
	b = appendMap(b, 3, r.Headers)
	if len(r.Body) > 0 {
		b = appendBytes(b, 4, r.Body)
	}
	if r.TimeoutMs > 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.TimeoutMs))
	}
	return b
}

// DecodeHTTPResponse decodes a troupe.v1.HttpResponse; its error field
// becomes the returned error.
func DecodeHTTPResponse(b []byte) (*HTTPResponse, error) {
	r := &HTTPResponse{}
	var herr string
	d := decoder{b: append([]byte(nil), b...)}
	for num, typ, ok := d.next(); ok; num, typ, ok = d.next() {
		switch num {
		case 1:
			r.Status = int32(d.varint(num, typ))
		case 2:
			d.mapEntry(num, typ, &r.Headers)
		case 3:
			r.Body = d.raw(num, typ)
		case 4:
			herr = d.str(num, typ)
		default:
			d.skip(num, typ)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("sdk: decode http response: %w", d.err)
	}
	if herr != "" {
		return nil, &HTTPError{Msg: herr}
	}
	return r, nil
}

// HTTPError is a failed outbound request: denied by the allow-list, timed
// out, no connection, or a response over the size limit.
type HTTPError struct{ Msg string }

func (e *HTTPError) Error() string { return "http_call: " + e.Msg }
