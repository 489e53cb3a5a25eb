package jsread

import (
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecode: a message of a direct batch, whatever its headers, is
// either a message of the stream asked for (a sequence, a subject, a
// time; the direct get's own headers taken off, the message's kept) or an
// error; decode never panics.
func FuzzDecode(f *testing.F) {
	f.Add("S", "7", "s.e.x", "2026-11-30T10:00:00.123456789Z", "6", "Troupe-Seq", "3", "payload")
	f.Add("S", "0", "s.e.x", "2026-11-30T10:00:00Z", "0", "", "", "")
	f.Add("T", "7", "s.e.x", "2026-11-30T10:00:00Z", "6", "", "", "")
	f.Add("S", "7", "", "not a time", "x", "Nats-Msg-Id", "b.1", "")
	f.Add("S", "18446744073709551616", "s", "2026-11-30T10:00:00Z", "-1", "Nats-Sequence", "8", "")
	direct := []string{hdrStream, hdrSequence, hdrSubject, hdrTimeStamp, hdrNumPending, hdrLastSeq}
	f.Fuzz(func(t *testing.T, stream, seq, subject, ts, last, key, value, data string) {
		h := nats.Header{}
		for _, kv := range [][2]string{{hdrStream, stream}, {hdrSequence, seq}, {hdrSubject, subject}, {hdrTimeStamp, ts}, {hdrLastSeq, last}, {key, value}} {
			if kv[0] != "" && kv[1] != "" {
				h.Add(kv[0], kv[1])
			}
		}
		sm, _, err := decode("S", &nats.Msg{Header: h, Data: []byte(data)})
		if err != nil {
			if sm != nil {
				t.Fatalf("a message and an error (%v)", err)
			}
			return
		}
		if stream != "S" || sm.Sequence == 0 || sm.Subject == "" || sm.Time.IsZero() || string(sm.Data) != data {
			t.Fatalf("decoded %+v, stream header %q", sm, stream)
		}
		for _, k := range direct {
			if _, ok := sm.Header[k]; ok {
				t.Fatalf("the direct get's header %s left on the message", k)
			}
		}
		if key != "" && value != "" && !slices.Contains(direct, key) && sm.Header.Get(key) != value {
			t.Fatalf("header %s = %q, want %q", key, sm.Header.Get(key), value)
		}
	})
}
