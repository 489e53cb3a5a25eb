package jsbatch

import (
	"errors"
	"testing"
)

// Replies as nats-server 2.15.2 sends them (see TestServerSemantics).
var sampleReplies = []string{
	``,
	`{"stream":"S","seq":13,"batch":"B","count":10}`,
	`{"stream":"S","domain":"d","seq":13,"batch":"B","count":10}`,
	`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"},"stream":"S","seq":0}`,
	`{"error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10176,"description":"atomic publish batch is incomplete"},"stream":"S","seq":0}`,
	`{"error":{"code":429,"err_code":10210,"description":"atomic publish too many inflight"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10199,"description":"atomic publish batch is too large: 1000"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10177,"description":"atomic publish unsupported header used: Nats-Expected-Last-Msg-Id"},"stream":"S","seq":0}`,
	`{"error":{"code":503,"err_code":10063,"description":"expected stream sequence does not match"},"stream":"S","seq":0}`,
	`{"stream":"S","seq":13,"duplicate": true,"batch":"B","count":10}`,
}

func TestParseCommit(t *testing.T) {
	const stream, id, n, expected = "S", "B", 10, 3
	type want struct {
		ack      Ack
		is       error
		conflict *ConflictError
		code     int
	}
	conflict := func(actual uint64, known bool) want {
		return want{conflict: &ConflictError{Stream: stream, Expected: expected, Actual: actual, ActualKnown: known}}
	}
	for _, c := range []struct {
		name  string
		reply string
		want  want
	}{
		{"ack", `{"stream":"S","seq":13,"batch":"B","count":10}`, want{ack: Ack{Stream: "S", FirstSeq: 4, LastSeq: 13}}},
		{"ack with a domain", `{"stream":"S","domain":"d","seq":13,"batch":"B","count":10}`, want{ack: Ack{Stream: "S", FirstSeq: 4, LastSeq: 13}}},
		{"conflict", `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`, conflict(5, true)},
		{"conflict at 0", `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 0"}}`, conflict(0, true)},
		{"conflict without a number", `{"error":{"code":400,"err_code":10071,"description":"key exists"}}`, conflict(0, false)},
		{"conflict with a bad number", `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: -1"}}`, conflict(0, false)},
		{"in flight", `{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}`, want{is: ErrInFlight, code: 10164}},
		{"id in process", `{"error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"}}`, want{is: ErrInFlight, code: 10158}},
		{"duplicate", `{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"}}`, want{is: ErrDuplicate, code: 10201}},
		{"incomplete", `{"error":{"code":400,"err_code":10176,"description":"atomic publish batch is incomplete"}}`, want{is: ErrIncomplete, code: 10176}},
		{"too many batches", `{"error":{"code":429,"err_code":10210,"description":"atomic publish too many inflight"}}`, want{is: ErrTooManyBatches, code: 10210}},
		{"too large", `{"error":{"code":400,"err_code":10199,"description":"atomic publish batch is too large: 1000"}}`, want{is: ErrTooLarge, code: 10199}},
		{"no stream", `{"error":{"code":404,"err_code":10059,"description":"stream not found"}}`, want{is: ErrNoStream, code: 10059}},
		{"another stream", `{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, want{is: ErrInvalid, code: 10060}},
		{"no leader", `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, want{is: ErrUnavailable, code: 10008}},
		{"apply-time mismatch", `{"error":{"code":503,"err_code":10063,"description":"expected stream sequence does not match"}}`, want{is: ErrUnknownOutcome, code: 10063}},
		{"unknown code", `{"error":{"code":400,"err_code":99999,"description":"new"}}`, want{code: 99999}},
		{"empty", ``, want{is: ErrUnknownOutcome}},
		{"not json", `nope`, want{is: ErrUnknownOutcome}},
		{"another stream's ack", `{"stream":"T","seq":13,"batch":"B","count":10}`, want{is: ErrUnknownOutcome}},
		{"another batch's ack", `{"stream":"S","seq":13,"batch":"C","count":10}`, want{is: ErrUnknownOutcome}},
		{"a short count", `{"stream":"S","seq":13,"batch":"B","count":9}`, want{is: ErrUnknownOutcome}},
		{"an ack at the wrong sequence", `{"stream":"S","seq":14,"batch":"B","count":10}`, want{is: ErrUnknownOutcome}},
		{"a duplicate ack", `{"stream":"S","seq":13,"duplicate":true,"batch":"B","count":10}`, want{is: ErrDuplicate}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ack, err := parseCommit([]byte(c.reply), stream, id, n, expected)
			w := c.want
			var ce *ConflictError
			var se *ServerError
			switch {
			case w.conflict != nil:
				if !errors.As(err, &ce) || *ce != *w.conflict {
					t.Fatalf("%v, want %+v", err, *w.conflict)
				}
			case w.is == nil && w.code == 0:
				if err != nil || ack != w.ack {
					t.Fatalf("%+v, %v; want %+v", ack, err, w.ack)
				}
			default:
				if w.is != nil && !errors.Is(err, w.is) {
					t.Fatalf("%v, want %v", err, w.is)
				}
				if w.code != 0 && (!errors.As(err, &se) || se.Code != w.code) {
					t.Fatalf("%v, want err_code %d", err, w.code)
				}
			}
		})
	}
}

func TestParseStaged(t *testing.T) {
	if err := parseStaged(nil, "S", 0); err != nil {
		t.Fatalf("empty reply: %v", err)
	}
	for reply, want := range map[string]error{
		`{"error":{"code":429,"err_code":10210,"description":"atomic publish too many inflight"}}`: ErrTooManyBatches,
		`{"error":{"code":503,"err_code":10063,"description":"x"}}`:                                ErrUnavailable,
		`{"stream":"S","seq":3}`: ErrUnavailable,
		`garbage`:                ErrUnavailable,
	} {
		if err := parseStaged([]byte(reply), "S", 0); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", reply, err, want)
		}
	}
}

// FuzzParseReply feeds arbitrary server replies to both parsers: they
// never panic, a success is exactly the batch that was sent, and a
// conflict names the expected sequence it was given.
func FuzzParseReply(f *testing.F) {
	for _, r := range sampleReplies {
		f.Add([]byte(r), uint64(3), uint16(10))
	}
	f.Fuzz(func(t *testing.T, data []byte, expected uint64, n uint16) {
		if n == 0 {
			n = 1
		}
		ack, err := parseCommit(data, "S", "B", int(n), expected)
		var ce *ConflictError
		switch {
		case err == nil:
			if ack.Stream != "S" || ack.FirstSeq != expected+1 || ack.LastSeq != expected+uint64(n) {
				t.Fatalf("ack %+v for %d messages after %d", ack, n, expected)
			}
		case errors.As(err, &ce):
			if ce.Stream != "S" || ce.Expected != expected || (!ce.ActualKnown && ce.Actual != 0) {
				t.Fatalf("conflict %+v for expected %d", *ce, expected)
			}
		}
		if err != nil && err.Error() == "" {
			t.Fatal("an error without text")
		}
		if err := parseStaged(data, "S", expected); err != nil && errors.Is(err, ErrUnknownOutcome) {
			t.Fatalf("a staged message's reply is never an unknown outcome: %v", err)
		}
	})
}
