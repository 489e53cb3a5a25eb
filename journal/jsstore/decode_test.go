package jsstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/journal"
)

const (
	fzPrefix = "troupe.p3.e."
	fzStream = "TROUPE_P3"
)

func fzSubject(kind, id string) string {
	return fzPrefix + b64.EncodeToString([]byte(kind)) + "." + b64.EncodeToString([]byte(id))
}

func rawHeader(kv ...string) []byte {
	b := []byte("NATS/1.0\r\n")
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, kv[i]+": "+kv[i+1]+"\r\n"...)
	}
	return append(b, "\r\n"...)
}

// Corrupt stored messages give a *journal.CorruptError naming the stream
// and the message's sequence.
func TestDecodeEventCorrupt(t *testing.T) {
	good := fzSubject("acct", "1")
	for _, tc := range []struct {
		name    string
		subject string
		header  []byte
		stream  string // in the error
	}{
		{"not an event subject", "troupe.p3.i.abc", rawHeader(hdrSeq, "1", hdrType, "E"), fzStream},
		{"bad base64", fzPrefix + "!!.??", rawHeader(hdrSeq, "1", hdrType, "E"), fzStream},
		{"kind with a slash", fzSubject("a/b", "1"), rawHeader(hdrSeq, "1", hdrType, "E"), fzStream},
		{"no sequence", good, rawHeader(hdrType, "E"), "acct/1"},
		{"sequence 0", good, rawHeader(hdrSeq, "0", hdrType, "E"), "acct/1"},
		{"no type", good, rawHeader(hdrSeq, "4"), "acct/1"},
		{"bad metadata", good, rawHeader(hdrSeq, "4", hdrType, "E", hdrMeta, "{not json"), "acct/1"},
		{"metadata not strings", good, rawHeader(hdrSeq, "4", hdrType, "E", hdrMeta, `{"a":1}`), "acct/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := nats.DecodeHeadersMsg(tc.header)
			if err != nil {
				t.Fatal(err)
			}
			_, err = decodeEvent(fzPrefix, fzStream, 3, &jetstream.RawStreamMsg{Subject: tc.subject, Sequence: 77, Header: h})
			var ce *journal.CorruptError
			if !errors.As(err, &ce) || ce.Stream != tc.stream || ce.Position != 77 {
				t.Fatalf("got %v (%+v); want a *journal.CorruptError of %q at 77", err, ce, tc.stream)
			}
			if msg := err.Error(); !strings.Contains(msg, fzStream) || !strings.Contains(msg, "sequence 77") {
				t.Fatalf("message %q does not name the JetStream stream and sequence", msg)
			}
		})
	}
	h, _ := nats.DecodeHeadersMsg(rawHeader(hdrSeq, "4", hdrType, "E", hdrTag, "x", hdrTag, "y", hdrMeta, `{"a":"b"}`))
	ev, err := decodeEvent(fzPrefix, fzStream, 3, &jetstream.RawStreamMsg{Subject: good, Sequence: 77, Header: h, Data: []byte("p"), Time: time.Unix(1, 0)})
	if err != nil || ev.Stream != "acct/1" || ev.Sequence != 4 || ev.Position != 77 || ev.Partition != 3 || len(ev.Tags) != 2 || ev.Metadata["a"] != "b" {
		t.Fatalf("good message: %+v, %v", ev, err)
	}
}

// FuzzDecodeEvent feeds the decoder of a stored message arbitrary
// subjects, header bytes and payloads: it decodes or returns a
// *journal.CorruptError, never panics, and what it decodes is a valid
// event of a valid stream that maps back to the same subject.
//
//	go test -run '^$' -fuzz FuzzDecodeEvent -fuzztime 30s ./journal/jsstore/
func FuzzDecodeEvent(f *testing.F) {
	f.Add(fzSubject("acct", "1"), rawHeader(hdrSeq, "1", hdrType, "Opened"), []byte(`{}`))
	f.Add(fzSubject("k", "a.b c"), rawHeader(hdrSeq, "9", hdrType, "E", hdrTag, "t", hdrMeta, `{"x":"y"}`), []byte{0, 1})
	f.Add(fzSubject("acct", "1"), rawHeader(hdrSeq, "-1", hdrType, "E"), []byte(nil))
	f.Add(fzPrefix+"YQ.YQ.x", []byte("NATS/1.0 503\r\n\r\n"), []byte("x"))
	f.Add("", []byte("garbage"), []byte(nil))
	f.Fuzz(func(t *testing.T, subject string, header, data []byte) {
		h, err := nats.DecodeHeadersMsg(header)
		if err != nil {
			h = nil // the client would not hand us such a message; the decoder must cope anyway
		}
		ev, err := decodeEvent(fzPrefix, fzStream, 3, &jetstream.RawStreamMsg{Subject: subject, Sequence: 5, Header: h, Data: data})
		if err != nil {
			var ce *journal.CorruptError
			if !errors.As(err, &ce) || ce.Position != 5 {
				t.Fatalf("error %v is not a *journal.CorruptError at 5", err)
			}
			return
		}
		kind, id, perr := journal.ParseStream(ev.Stream)
		switch {
		case perr != nil:
			t.Fatalf("decoded an invalid stream %q: %v", ev.Stream, perr)
		case fzSubject(kind, id) != subject:
			t.Fatalf("stream %q maps to %q, not %q", ev.Stream, fzSubject(kind, id), subject)
		case ev.Sequence == 0 || ev.Type == "" || ev.Position != 5 || ev.Partition != 3:
			t.Fatalf("decoded an invalid event %+v", ev)
		}
	})
}
