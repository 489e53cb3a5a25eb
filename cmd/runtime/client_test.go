package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// scriptedSends answers each Send with the next error of its script and
// keeps the idempotency keys it was sent.
type scriptedSends struct {
	troupev1connect.UnimplementedCommandServiceHandler
	mu     sync.Mutex
	script []*connect.Error
	keys   []string
}

func (s *scriptedSends) Send(_ context.Context, r *connect.Request[troupev1.SendRequest]) (*connect.Response[troupev1.SendResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, r.Msg.GetIdempotencyKey())
	return nil, s.script[min(len(s.keys), len(s.script))-1]
}

// `troupe send` retries with one key and, when it gives up, says what is
// known: not applied when every attempt's answer said so, and may or may
// not have been applied when any attempt's outcome is unknown.
func TestSendSaysWhatItsAttemptsKnow(t *testing.T) {
	notApplied := connect.NewError(connect.CodeUnavailable,
		errors.New("account/a1: shard 3 was served by no node in time, and this node reports the cluster not ready (no majority); the command was not applied: send it again"))
	unknown := connect.NewError(connect.CodeDeadlineExceeded,
		errors.New("deadline exceeded (unknown outcome: the command may or may not have been applied; send it again with the same idempotency key, which applies it at most once)"))
	for _, tc := range []struct {
		name   string
		script []*connect.Error
		want   string
	}{
		{"every attempt not applied", []*connect.Error{notApplied}, `none of 3 attempts applied it; sent again with --idempotency-key (send-[0-9a-f]+), it applies at most once`},
		{"the first attempt unknown", []*connect.Error{unknown, notApplied}, `the command may or may not have been applied: send it again with --idempotency-key (send-[0-9a-f]+)`},
		{"the last attempt unknown", []*connect.Error{notApplied, notApplied, unknown}, `the command may or may not have been applied: send it again with --idempotency-key (send-[0-9a-f]+)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scriptedSends{script: tc.script}
			mux := http.NewServeMux()
			mux.Handle(troupev1connect.NewCommandServiceHandler(s))
			srv := httptest.NewServer(mux)
			defer srv.Close()
			_, stderr, code := cli(t, srv.URL, "send", "--retries", "2", "account/a1", "Deposit", `{"amount":1}`)
			if code == 0 {
				t.Fatalf("troupe send succeeded against a node that never applies; stderr %s", stderr)
			}
			last := stderr[strings.LastIndex(stderr, "\n")+1:]
			m := regexp.MustCompile(tc.want).FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("the last line %q does not match %q", last, tc.want)
			}
			if len(s.keys) != 3 {
				t.Fatalf("%d attempts, want 3", len(s.keys))
			}
			for _, k := range s.keys {
				if k != m[1] {
					t.Fatalf("attempts sent keys %v; the message names %s", s.keys, m[1])
				}
			}
		})
	}
}
