package node

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors/codes"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

func TestParseCommandRequest(t *testing.T) {
	pb, _ := proto.Marshal(&troupev1.SendRequest{Type: "Deposit"})
	tests := []struct {
		name, subject, body string
		pb                  bool
		wantErr             string
		wantKind, wantType  string
	}{
		{"json", "troupe.cmd.account.acc-1", `{"type":"Deposit","payload":{"amount":5}}`, false, "", "account", "Deposit"},
		{"protobuf", "troupe.cmd.account.acc-1", string(pb), true, "", "account", "Deposit"},
		{"no id", "troupe.cmd.account", `{}`, false, "want troupe.cmd.<kind>.<id>", "", ""},
		{"dotted id", "troupe.cmd.account.a.b", `{}`, false, "want troupe.cmd.<kind>.<id>", "", ""},
		{"escaped dot in the id", "troupe.cmd.account.a%2Eb", `{"type":"Open"}`, false, "", "account", "Open"},
		{"bad escape", "troupe.cmd.account.a%2", `{}`, false, "id: escape at byte 1 is cut short", "", ""},
		{"needless escape", "troupe.cmd.account.%61", `{}`, false, "bad escape", "", ""},
		{"other prefix", "other.account.x", `{}`, false, "want troupe.cmd.<kind>.<id>", "", ""},
		// As on HTTP: an empty body is the empty message (newCommand then
		// asks for "type"), and unknown top-level fields are ignored.
		{"empty body", "troupe.cmd.account.x", ``, false, "", "account", ""},
		{"unknown field", "troupe.cmd.account.x", `{"type":"Deposit","future":1}`, false, "", "account", "Deposit"},
		{"bad json", "troupe.cmd.account.x", `{"type":`, false, "request body ends too early", "", ""},
		{"mismatch", "troupe.cmd.account.x", `{"kind":"dragon"}`, false, "body names dragon/ but the subject names account/x", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseCommandRequest("troupe.cmd", tt.subject, []byte(tt.body), tt.pb)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || codes.Of(err) != codes.InvalidArgument {
					t.Fatalf("err %v, want invalid_argument containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || req.GetKind() != tt.wantKind || req.GetType() != tt.wantType {
				t.Fatalf("req %v err %v", req, err)
			}
		})
	}
}

func FuzzParseCommandRequest(f *testing.F) {
	f.Add("troupe.cmd.account.acc-1", []byte(`{"type":"Deposit","payload":{"amount":5}}`), false)
	f.Add("troupe.cmd.account.acc-1", []byte{0x1a, 0x07, 'D', 'e', 'p', 'o', 's', 'i', 't'}, true)
	f.Add("troupe.cmd..", []byte(`{}`), false)
	f.Add("troupe.cmd.account.col%2Ex", []byte(`{"type":"Open"}`), false)
	f.Fuzz(func(t *testing.T, subject string, body []byte, pb bool) {
		req, err := parseCommandRequest("troupe.cmd", subject, body, pb)
		if err != nil {
			if codes.Of(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not invalid_argument", err)
			}
			return
		}
		// The subject names exactly the kind and id it was built from.
		if req.GetKind() == "" || req.GetId() == "" || "troupe.cmd."+subjectToken(req.GetKind())+"."+subjectToken(req.GetId()) != subject {
			t.Fatalf("accepted %q with kind %q id %q", subject, req.GetKind(), req.GetId())
		}
	})
}

func TestEventSubject(t *testing.T) {
	tests := []struct{ tmpl, kind, id, typ, want string }{
		{"troupe.events.{kind}.{id}", "account", "acc-1", "Opened", "troupe.events.account.acc-1"},
		{"bank.{type}.{id}", "account", "a.b c*>", "Deposited", "bank.Deposited.a%2Eb%20c%2A%3E"},
		{"x.{id}", "k", "", "T", "x.%"},
		// Ids that differ only in a character that cannot be in a token
		// get different subjects.
		{"x.{id}", "k", "col.x", "T", "x.col%2Ex"},
		{"x.{id}", "k", "col_x", "T", "x.col_x"},
		{"x.{id}", "k", "100%", "T", "x.100%25"},
		{"x.{id}", "k", "é", "T", "x.%C3%A9"},
	}
	for _, tt := range tests {
		if got := eventSubject(tt.tmpl, tt.kind, tt.id, tt.typ); got != tt.want {
			t.Errorf("eventSubject(%q, %q, %q, %q) = %q, want %q", tt.tmpl, tt.kind, tt.id, tt.typ, got, tt.want)
		}
	}
	if _, err := New(Config{EventSubjectByKind: map[string]string{"account": "bad..subject"}}); err == nil || !strings.Contains(err.Error(), `event subject of kind "account"`) {
		t.Fatalf("bad per-kind subject: %v", err)
	}
}

func TestCommittedEventsOnPerKindSubjects(t *testing.T) {
	cfg := testConfig(t)
	cfg.EventSubjectByKind = map[string]string{"account": "bank.accounts.{id}.{type}", "transfer": "-"}
	n := startNode(t, cfg)
	defer n.Close()
	sub, err := n.Bus().Conn().SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ kind, id, typ, body string }{
		{"account", "a1", "Open", `{}`},
		{"account", "a2", "Open", `{}`},
		{"transfer", "t1", "Start", `{"from":"a1","to":"a2","amount":1}`},
	} {
		if _, err := n.Runtime().Send(ctx, &troupev1.Command{Kind: c.kind, EntityId: c.id, Type: c.typ, Payload: []byte(c.body)}); err != nil {
			t.Fatal(err)
		}
	}
	var subjects []string
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			break
		}
		if strings.HasPrefix(m.Subject, "bank.") || strings.HasPrefix(m.Subject, "troupe.events.") {
			subjects = append(subjects, m.Subject+" "+m.Header.Get("Troupe-Position"))
		}
	}
	// The transfer's own events stay off NATS; the accounts' (including
	// the transfer's withdrawal, which fails: a1 is empty) are on theirs.
	want := []string{"bank.accounts.a1.Opened 1", "bank.accounts.a2.Opened 2"}
	if strings.Join(subjects, "|") != strings.Join(want, "|") {
		t.Fatalf("subjects %v, want %v", subjects, want)
	}
}

// A caller's W3C trace context travels with the command onto its events:
// in the journal and on NATS.
func TestTraceContextReachesEvents(t *testing.T) {
	n := startNode(t, testConfig(t))
	defer n.Close()
	sub, err := n.Bus().Conn().SubscribeSync("troupe.events.account.>")
	if err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := troupev1connect.NewCommandServiceClient(http.DefaultClient, "http://"+n.HTTPAddr())
	req := connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: "tr-1", Type: "Open"})
	req.Header().Set("traceparent", tp)
	if _, err := c.Send(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("traceparent"); got != tp {
		t.Fatalf("published event traceparent %q, want %q", got, tp)
	}
	// A NATS request carries it the same way.
	const tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	rm := nats.NewMsg("troupe.cmd.account.tr-1")
	rm.Header.Set("traceparent", tp2)
	rm.Data = []byte(`{"type":"Deposit","payload":{"amount":3}}`)
	if _, err := n.Bus().Conn().RequestMsg(rm, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev, err := range n.Journal().Read(context.Background(), "account/tr-1", 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Metadata["traceparent"])
	}
	if len(got) != 2 || got[0] != tp || got[1] != tp2 {
		t.Fatalf("journal traceparents %q", got)
	}
}

// The subject encoding is injective and reversible: no two values share a
// token, every token is one valid subject token, and parseToken inverts it.
func FuzzSubjectToken(f *testing.F) {
	for _, s := range [][2]string{{"col.x", "col_x"}, {"a b", "a_b"}, {"", "%"}, {"*", ">"}, {"100%", "100%25"}, {"é", "%C3%A9"}, {"a\x00b", "a\tb"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ta, tb := subjectToken(a), subjectToken(b)
		if a != b && ta == tb {
			t.Fatalf("%q and %q share the token %q", a, b, ta)
		}
		if ta == "" || strings.ContainsAny(ta, ".*> \t\r\n\x00") {
			t.Fatalf("token %q of %q is not one subject token", ta, a)
		}
		got, err := parseToken(ta)
		if err != nil || got != a {
			t.Fatalf("parseToken(%q) = %q, %v; want %q", ta, got, err, a)
		}
		// Whatever parseToken accepts, subjectToken produces: one
		// subject per value.
		if v, err := parseToken(b); err == nil && subjectToken(v) != b {
			t.Fatalf("parseToken accepts %q as %q, whose token is %q", b, v, subjectToken(v))
		}
	})
}
