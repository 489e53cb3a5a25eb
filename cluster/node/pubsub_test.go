package node

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
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
		{"other prefix", "other.account.x", `{}`, false, "want troupe.cmd.<kind>.<id>", "", ""},
		{"empty body", "troupe.cmd.account.x", ``, false, "empty body", "", ""},
		{"bad json", "troupe.cmd.account.x", `{"type":`, false, "body:", "", ""},
		{"mismatch", "troupe.cmd.account.x", `{"kind":"dragon"}`, false, "body names dragon/ but the subject names account/x", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseCommandRequest("troupe.cmd", tt.subject, []byte(tt.body), tt.pb)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || connect.CodeOf(err) != connect.CodeInvalidArgument {
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
	f.Fuzz(func(t *testing.T, subject string, body []byte, pb bool) {
		req, err := parseCommandRequest("troupe.cmd", subject, body, pb)
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("error %v is not invalid_argument", err)
			}
			return
		}
		if req.GetKind() == "" || req.GetId() == "" || strings.Contains(req.GetId(), ".") {
			t.Fatalf("accepted %q with kind %q id %q", subject, req.GetKind(), req.GetId())
		}
	})
}
