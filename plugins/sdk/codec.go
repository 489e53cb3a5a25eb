package sdk

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The guest decodes and encodes the ABI messages with protowire only: the
// full protobuf runtime would add megabytes and milliseconds of start-up to
// every Go plugin. Field numbers follow proto/troupe/v1/{plugin,envelope}.proto;
// a host-side test checks both against the generated code.

var errTruncated = errors.New("sdk: truncated message")

// fieldFunc handles one field; it returns the bytes consumed or a negative
// protowire error code.
type fieldFunc func(num protowire.Number, typ protowire.Type, b []byte) int

// walk iterates over the fields of a message.
func walk(b []byte, f fieldFunc) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		m := f(num, typ, b)
		if m == skip {
			m = protowire.ConsumeFieldValue(num, typ, b)
		}
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}

// skip tells walk to skip the field (unknown, or of an unexpected type).
const skip = -1000

func str(typ protowire.Type, b []byte, dst *string) int {
	if typ != protowire.BytesType {
		return skip
	}
	v, n := protowire.ConsumeBytes(b)
	if n >= 0 {
		*dst = string(v)
	}
	return n
}

func byts(typ protowire.Type, b []byte, dst *[]byte) int {
	if typ != protowire.BytesType {
		return skip
	}
	v, n := protowire.ConsumeBytes(b)
	if n >= 0 {
		*dst = append([]byte(nil), v...) // the input buffer is reused by the host
	}
	return n
}

func varint(typ protowire.Type, b []byte, dst *uint64) int {
	if typ != protowire.VarintType {
		return skip
	}
	v, n := protowire.ConsumeVarint(b)
	if n >= 0 {
		*dst = v
	}
	return n
}

func sub(typ protowire.Type, b []byte, decode func([]byte) error) int {
	if typ != protowire.BytesType {
		return skip
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return n
	}
	if err := decode(v); err != nil {
		return -1 // reported as a generic parse error
	}
	return n
}

func mapEntry(typ protowire.Type, b []byte, dst *map[string]string) int {
	return sub(typ, b, func(e []byte) error {
		var k, v string
		err := walk(e, func(num protowire.Number, typ protowire.Type, b []byte) int {
			switch num {
			case 1:
				return str(typ, b, &k)
			case 2:
				return str(typ, b, &v)
			}
			return skip
		})
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = make(map[string]string)
		}
		(*dst)[k] = v
		return nil
	})
}

// DecodeRequest decodes a troupe.v1.PluginRequest.
func DecodeRequest(b []byte) (*Request, error) {
	r := &Request{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		var u uint64
		switch num {
		case 1:
			n := varint(typ, b, &u)
			r.ABIVersion = uint32(u)
			return n
		case 2:
			n := varint(typ, b, &u)
			r.Hook = Hook(int32(u))
			return n
		case 3:
			return sub(typ, b, func(b []byte) error { return decodeContext(b, &r.Context) })
		case 10:
			r.Command = &Command{}
			return sub(typ, b, func(b []byte) error { return decodeCommand(b, r.Command) })
		case 11:
			r.Event = &Event{}
			return sub(typ, b, func(b []byte) error { return decodeEvent(b, r.Event) })
		case 12:
			r.Topic = &TopicMessage{}
			return sub(typ, b, func(b []byte) error { return decodeTopic(b, r.Topic) })
		case 13:
			r.Call = &Call{}
			return sub(typ, b, func(b []byte) error { return decodeCall(b, r.Call) })
		}
		return skip
	})
	if err != nil {
		return nil, fmt.Errorf("sdk: decode request: %w", err)
	}
	return r, nil
}

func decodeContext(b []byte, c *Context) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		switch num {
		case 1:
			return str(typ, b, &c.Node)
		case 2:
			return str(typ, b, &c.Plugin)
		case 3:
			return str(typ, b, &c.PluginVersion)
		case 4:
			return str(typ, b, &c.Projection)
		}
		return skip
	})
}

func decodeTrace(b []byte, t *TraceContext) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		switch num {
		case 1:
			return str(typ, b, &t.Traceparent)
		case 2:
			return str(typ, b, &t.Tracestate)
		}
		return skip
	})
}

func decodeCommand(b []byte, c *Command) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		switch num {
		case 1:
			return str(typ, b, &c.ID)
		case 2:
			return str(typ, b, &c.Kind)
		case 3:
			return str(typ, b, &c.EntityID)
		case 4:
			return str(typ, b, &c.Type)
		case 5:
			return str(typ, b, &c.IdempotencyKey)
		case 6:
			return byts(typ, b, &c.Payload)
		case 7:
			return str(typ, b, &c.ContentType)
		case 8:
			return sub(typ, b, func(b []byte) error { return decodeTrace(b, &c.Trace) })
		case 9:
			return mapEntry(typ, b, &c.Metadata)
		}
		return skip
	})
}

func decodeEvent(b []byte, e *Event) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		var u uint64
		switch num {
		case 1:
			return str(typ, b, &e.StreamID)
		case 2:
			return varint(typ, b, &e.Sequence)
		case 3:
			return varint(typ, b, &e.GlobalPosition)
		case 4:
			n := varint(typ, b, &u)
			e.TimeUnixNano = int64(u)
			return n
		case 5:
			return str(typ, b, &e.Type)
		case 6:
			return byts(typ, b, &e.Payload)
		case 7:
			return str(typ, b, &e.ContentType)
		case 8:
			var s string
			n := str(typ, b, &s)
			if n >= 0 {
				e.Tags = append(e.Tags, s)
			}
			return n
		case 9:
			return mapEntry(typ, b, &e.Metadata)
		}
		return skip
	})
}

func decodeTopic(b []byte, m *TopicMessage) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		switch num {
		case 1:
			return str(typ, b, &m.Topic)
		case 2:
			return byts(typ, b, &m.Payload)
		case 3:
			return str(typ, b, &m.ContentType)
		case 4:
			return mapEntry(typ, b, &m.Metadata)
		case 5:
			return str(typ, b, &m.MessageID)
		case 6:
			return sub(typ, b, func(b []byte) error { return decodeTrace(b, &m.Trace) })
		}
		return skip
	})
}

func decodeCall(b []byte, c *Call) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		switch num {
		case 1:
			return str(typ, b, &c.Operation)
		case 2:
			return byts(typ, b, &c.Payload)
		case 3:
			return str(typ, b, &c.ContentType)
		case 4:
			return mapEntry(typ, b, &c.Metadata)
		case 5:
			return sub(typ, b, func(b []byte) error { return decodeTrace(b, &c.Trace) })
		}
		return skip
	})
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
	err := walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		var u uint64
		switch num {
		case 1:
			n := varint(typ, b, &u)
			v.reject = u != 0
			return n
		case 2:
			return str(typ, b, &v.reason)
		case 3:
			v.replace = true
			return sub(typ, b, func(b []byte) error {
				return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
					switch num {
					case 1:
						return byts(typ, b, &v.payload)
					case 2:
						return str(typ, b, &v.ctype)
					}
					return skip
				})
			})
		case 4:
			return mapEntry(typ, b, &v.metadata)
		case 5:
			v.reply = &Reply{}
			return sub(typ, b, func(b []byte) error {
				return walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
					switch num {
					case 1:
						return byts(typ, b, &v.reply.Payload)
					case 2:
						return str(typ, b, &v.reply.ContentType)
					case 3:
						return mapEntry(typ, b, &v.reply.Metadata)
					}
					return skip
				})
			})
		case 6:
			return str(typ, b, &v.err)
		}
		return skip
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("sdk: decode verdict: %w", err)
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
	err := walk(b, func(num protowire.Number, typ protowire.Type, b []byte) int {
		var u uint64
		switch num {
		case 1:
			n := varint(typ, b, &u)
			r.Status = int32(u)
			return n
		case 2:
			return mapEntry(typ, b, &r.Headers)
		case 3:
			return byts(typ, b, &r.Body)
		case 4:
			return str(typ, b, &herr)
		}
		return skip
	})
	if err != nil {
		return nil, fmt.Errorf("sdk: decode http response: %w", err)
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
