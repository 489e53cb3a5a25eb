package lease

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// decide judges an ambiguous write from a read of its key.
func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		expected uint64
		e        entry
		want     verdict
	}{
		{"nothing there yet (lagging read)", 0, entry{}, pending},
		{"still the expected revision", 7, entry{rev: 7, msgID: "other"}, pending},
		{"an older revision (lagging replica)", 7, entry{rev: 5, msgID: "mine"}, pending},
		{"our message is the latest", 7, entry{rev: 9, msgID: "mine"}, written},
		{"our grant on an empty key", 0, entry{rev: 3, msgID: "mine"}, written},
		{"someone else wrote after", 7, entry{rev: 9, msgID: "other"}, superseded},
		{"an expiry marker after", 7, entry{rev: 8}, superseded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(tc.expected, tc.e, "mine"); got != tc.want {
				t.Fatalf("decide(%d, %+v) = %d, want %d", tc.expected, tc.e, got, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	api := func(code int, ec jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: ec, Description: desc})
	}
	for _, tc := range []struct {
		name string
		err  error
		want outcome
		seq  uint64
	}{
		{"wrong last sequence", api(400, 10071, "wrong last sequence: 42"), outcomeConflict, 42},
		{"write in flight", api(400, 10164, "wrong last sequence"), outcomeInFlight, 0},
		{"timeout", fmt.Errorf("x: %w", nats.ErrTimeout), outcomeUnknown, 0},
		{"no responders", jetstream.ErrNoStreamResponse, outcomeUnknown, 0},
		{"unavailable", api(503, 10008, "JetStream system temporarily unavailable"), outcomeUnknown, 0},
		{"ttl invalid", api(400, 10165, "invalid per-message TTL"), outcomeRefused, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Fatalf("classify(%v) = %d, want %d", tc.err, got, tc.want)
			}
			if got := lastSeqOf(tc.err); got != tc.seq {
				t.Fatalf("lastSeqOf(%v) = %d, want %d", tc.err, got, tc.seq)
			}
		})
	}
}

func TestParseEntry(t *testing.T) {
	ts := time.Unix(1000, 0)
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		hdr     nats.Header
		data    string
		want    entry
		wantErr bool
	}{
		{"grant", hdr(nats.MsgIdHdr, "m1"), `{"holder":"a","ttl_s":15}`,
			entry{rev: 9, live: true, holder: "a", epoch: 9, ttl: 15 * time.Second, written: ts, msgID: "m1"}, false},
		{"renewal", hdr(), `{"holder":"a","epoch":4,"ttl_s":2}`,
			entry{rev: 9, live: true, holder: "a", epoch: 4, ttl: 2 * time.Second, written: ts}, false},
		{"release tombstone", hdr("KV-Operation", "PURGE"), "", entry{rev: 9, written: ts}, false},
		{"delete", hdr("KV-Operation", "DEL"), "", entry{rev: 9, written: ts}, false},
		{"expiry marker", hdr("Nats-Marker-Reason", "MaxAge"), "", entry{rev: 9, written: ts}, false},
		{"not json", hdr(), "hello", entry{rev: 9, written: ts}, true},
		{"no holder", hdr(), `{"ttl_s":2}`, entry{rev: 9, written: ts}, true},
		{"no ttl", hdr(), `{"holder":"a"}`, entry{rev: 9, written: ts}, true},
		{"negative ttl", hdr(), `{"holder":"a","ttl_s":-5}`, entry{rev: 9, written: ts}, true},
		{"ttl past a Duration", hdr(), `{"holder":"a","ttl_s":9223372037}`, entry{rev: 9, written: ts}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEntry(9, tc.hdr, []byte(tc.data), ts)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, errForeign)) {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseEntry: any value read from a lease key either is a lease
// record (a holder, an epoch, a positive TTL) or says it is not one
// (errForeign); it never panics.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{`{"holder":"a","ttl_s":15}`, `{"holder":"a","epoch":4,"ttl_s":2}`, `{"ttl_s":2}`,
		`{"holder":"a","ttl_s":-1}`, `{"holder":"a","ttl_s":9223372036854775807}`, `null`, ``, `[1]`} {
		f.Add(uint64(9), "", s)
		f.Add(uint64(1), "PURGE", s)
	}
	ts := time.Unix(1000, 0)
	f.Fuzz(func(t *testing.T, seq uint64, op, data string) {
		if seq == 0 {
			seq = 1 // a key's revisions start at 1
		}
		h := nats.Header{}
		if op != "" {
			h.Set("KV-Operation", op)
		}
		e, err := parseEntry(seq, h, []byte(data), ts)
		switch {
		case err != nil:
			if !errors.Is(err, errForeign) || e.live {
				t.Fatalf("err %v with entry %+v: want errForeign and no live lease", err, e)
			}
		case e.live:
			if e.holder == "" || e.epoch == 0 || e.ttl < time.Second {
				t.Fatalf("live lease %+v from %q: want a holder, an epoch and a TTL of at least 1s", e, data)
			}
		case h.Get("KV-Operation") == "":
			t.Fatalf("not live and no error from %q with no operation", data)
		}
		if e.rev != seq {
			t.Fatalf("rev %d, want %d", e.rev, seq)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"defaults", Config{}, ""},
		{"test timers", Config{TTL: 2 * time.Second, RenewEvery: 500 * time.Millisecond, Margin: 500 * time.Millisecond}, ""},
		{"bucket", Config{Bucket: "a.b"}, "bucket"},
		{"replicas", Config{Replicas: 7}, "replicas"},
		{"ttl below a second", Config{TTL: 500 * time.Millisecond, Margin: 100 * time.Millisecond}, "ttl"},
		{"ttl not whole seconds", Config{TTL: 1500 * time.Millisecond}, "whole seconds"},
		{"margin too large", Config{TTL: 2 * time.Second, Margin: 2 * time.Second}, "margin"},
		{"negative margin", Config{Margin: -time.Second}, "margin"},
		{"renewals too rare", Config{TTL: 10 * time.Second, RenewEvery: 5 * time.Second}, "renew every"},
		{"marker ttl", Config{MarkerTTL: 100 * time.Millisecond}, "marker ttl"},
		{"attempts", Config{Attempts: -1}, "attempts"},
		{"request timeout", Config{RequestTimeout: -1}, "request timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.withDefaults().Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	d := Config{}.withDefaults()
	if d.TTL != DefaultTTL || d.RenewEvery != 3*time.Second || d.Margin != DefaultMargin || d.Bucket != DefaultBucket {
		t.Fatalf("defaults: %+v", d)
	}
}

func TestLostErrorIs(t *testing.T) {
	var err error = fmt.Errorf("wrapped: %w", &LostError{Name: "x", Reason: Expired, Err: ErrUnavailable})
	if !errors.Is(err, ErrLost) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v: Is ErrLost %v, Is ErrUnavailable %v", err, errors.Is(err, ErrLost), errors.Is(err, ErrUnavailable))
	}
	if Superseded.String() != "superseded" || Expired.String() != "expired" || LostReason(9).String() != "LostReason(9)" {
		t.Fatal("LostReason.String")
	}
}
