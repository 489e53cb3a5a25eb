package jsstore

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

// The entity subject, built in one buffer, is the one the layout defines
// (ADR 0011): <prefix>.p<n>.<type>.<base64url kind>.<base64url id>, and
// decodes back to its stream.
func TestEntitySubjectLayout(t *testing.T) {
	s := &Store{cfg: Config{Prefix: "TROUPE"}}
	enc := base64.RawURLEncoding.EncodeToString
	for _, tc := range []struct {
		n      int
		typ    string
		stream string
	}{
		{0, "e", "account/acc-1"},
		{95, "s", "account/a.b*c>d e"},
		{1234, "t", "ünïcode/ключ/with/slashes"},
	} {
		kind, id, _ := strings.Cut(tc.stream, "/")
		want := "TROUPE.p" + strconv.Itoa(tc.n) + "." + tc.typ + "." + enc([]byte(kind)) + "." + enc([]byte(id))
		if got := s.entitySubject(tc.n, tc.typ, tc.stream); got != want {
			t.Errorf("entitySubject(%d, %q, %q) = %q, want %q", tc.n, tc.typ, tc.stream, got, want)
		}
		if tc.typ == "e" {
			back, err := s.streamOfSubject(tc.n, s.entitySubject(tc.n, "e", tc.stream))
			if err != nil || back != tc.stream {
				t.Errorf("streamOfSubject(entitySubject(%q)) = %q, %v", tc.stream, back, err)
			}
		}
	}
}
