package jsbatch

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// rawMsg is one message of a hand-made batch, for probing the server
// without Publish's checks.
type rawMsg struct {
	subj   string
	seq    int               // Nats-Batch-Sequence
	commit string            // Nats-Batch-Commit, "" for none
	hdr    map[string]string // more headers
}

// sendRaw sends a hand-made batch as requests, one message at a time, and
// returns the server's reply to each.
func sendRaw(t *testing.T, nc *nats.Conn, id string, msgs []rawMsg) []string {
	t.Helper()
	var out []string
	for i, r := range msgs {
		m := nats.NewMsg(r.subj)
		m.Data = fmt.Appendf(nil, "raw %d", i)
		m.Header.Set(HeaderBatchID, id)
		m.Header.Set(HeaderBatchSeq, strconv.Itoa(r.seq))
		if r.commit != "" {
			m.Header.Set(HeaderBatchCommit, r.commit)
		}
		for k, v := range r.hdr {
			m.Header.Set(k, v)
		}
		resp, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			out = append(out, "ERR "+err.Error())
			continue
		}
		out = append(out, string(resp.Data))
	}
	return out
}

// replyCode sums up a reply: "staged" (empty), "ack N" (committed at N),
// or the err_code.
func replyCode(t *testing.T, r string) string {
	t.Helper()
	if r == "" {
		return "staged"
	}
	var rep reply
	if err := json.Unmarshal([]byte(r), &rep); err != nil {
		return r
	}
	if rep.Error != nil {
		return strconv.Itoa(rep.Error.Code)
	}
	return fmt.Sprintf("ack %d", rep.Seq)
}

// TestServerSemantics pins what nats-server answers to each message of an
// atomic batch, and what lands, so that an upgrade that changes it fails
// here. The cases run in order on one stream; every message is sent as a
// request to see every reply.
func TestServerSemantics(t *testing.T) {
	h := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const subjSeq = "Nats-Expected-Last-Subject-Sequence"
	cases := []struct {
		name   string
		msgs   []rawMsg
		want   []string // reply per message
		landed int
	}{
		{"staged messages get an empty reply, the commit a publish ack with the last sequence",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 2}, {subj: "s.c", seq: 3, commit: "1", hdr: h(HeaderMsgID, "x1")}},
			[]string{"staged", "staged", "ack 3"}, 3},
		{"expected last sequence on a later message, even with the value it would have: 10164",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 2, hdr: h(headerExpectedLastSeq, "4")}, {subj: "s.c", seq: 3, commit: "1"}},
			[]string{"staged", "staged", "10164"}, 0},
		{"expected last sequence on a later message is checked against the batch's running sequence",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 2, hdr: h(headerExpectedLastSeq, "3")}, {subj: "s.c", seq: 3, commit: "1"}},
			[]string{"staged", "staged", "10071"}, 0},
		{"a stale expected last sequence on the first message refuses the batch at the commit",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(headerExpectedLastSeq, "1")}, {subj: "s.c", seq: 2, commit: "1"}},
			[]string{"staged", "10071"}, 0},
		{"two messages with one id: the whole batch is refused",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(HeaderMsgID, "d1")}, {subj: "s.c", seq: 2, commit: "1", hdr: h(HeaderMsgID, "d1")}},
			[]string{"staged", "10201"}, 0},
		{"an id already in the stream, on any message: the whole batch is refused (no duplicate ack)",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(HeaderMsgID, "y1")}, {subj: "s.c", seq: 2, commit: "1", hdr: h(HeaderMsgID, "x1")}},
			[]string{"staged", "10201"}, 0},
		{"messages are checked in order: a stale fence on the first message wins over a duplicate id on the second",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(HeaderMsgID, "y1", headerExpectedLastSeq, "0")}, {subj: "s.c", seq: 2, commit: "1", hdr: h(HeaderMsgID, "x1")}},
			[]string{"staged", "10071"}, 0},
		{"within a message the id is checked before the fence",
			[]rawMsg{{subj: "s.c", seq: 1, commit: "1", hdr: h(HeaderMsgID, "x1", headerExpectedLastSeq, "0")}},
			[]string{"10201"}, 0},
		{"Nats-Expected-Last-Msg-Id is not supported in a batch",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(headerExpectedLastMsgID, "x1")}, {subj: "s.c", seq: 2, commit: "1"}},
			[]string{"staged", "10177"}, 0},
		{"per-subject expectations hold per message",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(subjSeq, "1")}, {subj: "s.new", seq: 2, commit: "1", hdr: h(subjSeq, "0")}},
			[]string{"staged", "ack 5"}, 2},
		{"a stale per-subject expectation refuses the batch; the number is the subject's",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 2, commit: "1", hdr: h(subjSeq, "0")}},
			[]string{"staged", "10071"}, 0},
		{"a subject written earlier in the batch cannot be checked again: 10164",
			[]rawMsg{{subj: "s.y", seq: 1}, {subj: "s.y", seq: 2, commit: "1", hdr: h(subjSeq, "0")}},
			[]string{"staged", "10164"}, 0},
		{"a gap in the batch sequence: incomplete",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 3, commit: "1"}},
			[]string{"staged", "10176"}, 0},
		{"a batch whose first message never came: incomplete",
			[]rawMsg{{subj: "s.b", seq: 2, commit: "1"}},
			[]string{"10176"}, 0},
		{"a commit value other than 1 (or eob) abandons the batch at once",
			[]rawMsg{{subj: "s.a", seq: 1}, {subj: "s.b", seq: 2, commit: "0"}},
			[]string{"staged", "10200"}, 0},
		{"a batch of one message is its own commit",
			[]rawMsg{{subj: "s.a", seq: 1, commit: "1"}},
			[]string{"ack 6"}, 1},
		{"subjects of another stream",
			[]rawMsg{{subj: "s.a", seq: 1, hdr: h(headerExpectedStream, "OTHER")}, {subj: "s.b", seq: 2, commit: "1"}},
			[]string{"staged", "10060"}, 0},
		{"more than 1,000 messages",
			[]rawMsg{{subj: "s.b", seq: 1001, commit: "1"}},
			[]string{"10199"}, 0},
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			s := start(t, kind)
			ctx := testCtx(t, 2*time.Minute)
			nc := s.connect(0)
			js := newPublisher(t, nc, Config{}).js
			st := s.createStream(ctx, js, "S", "s.>")
			for _, c := range cases {
				before := len(readAll(ctx, t, st))
				replies := sendRaw(t, nc, nuid.Next(), c.msgs)
				landed := len(readAll(ctx, t, st)) - before
				var got []string
				for _, r := range replies {
					got = append(got, replyCode(t, r))
				}
				if fmt.Sprint(got) != fmt.Sprint(c.want) || landed != c.landed {
					t.Errorf("%s:\n replies %v, want %v\n landed %d, want %d\n raw: %q", c.name, got, c.want, landed, c.landed, replies)
				}
			}
			// What a landed batch stores: its headers, the batch's included.
			m, err := st.GetMsg(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{HeaderBatchID, HeaderBatchSeq, HeaderBatchCommit, HeaderMsgID} {
				if m.Header.Get(k) == "" {
					t.Errorf("stored message lacks %s: %v", k, m.Header)
				}
			}
			// At most 50 open batches per stream.
			for i := range 51 {
				r := sendRaw(t, nc, fmt.Sprintf("open%d", i), []rawMsg{{subj: "s.o", seq: 1}})
				want := "staged"
				if i == 50 {
					want = "10210"
				}
				if got := replyCode(t, r[0]); got != want {
					t.Errorf("open batch %d: %s, want %s", i+1, got, want)
				}
			}
		})
	}
}
