package topics

import (
	"strings"
	"testing"
)

// splitValid is the obvious, allocating statement of the topic rules; the
// one-pass validator must agree with it.
func splitValid(s string, wildcards bool) bool {
	if s == "" || len(s) > 512 {
		return false
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "", strings.ContainsAny(tok, " \t\r\n\x00"):
			return false
		case tok == "*" || tok == ">":
			if !wildcards || (tok == ">" && i != len(toks)-1) {
				return false
			}
		case strings.ContainsAny(tok, "*>"):
			return false
		}
	}
	return true
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "a.b", "a.*", "a.>", ">", "*", "a..b", ".a", "a.", "a b", "a.>.b", "a>b", "x.*.y", "\x00", "troupe.events.account.acc-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, wild := range []bool{false, true} {
			if got, want := validate(s, wild) == nil, splitValid(s, wild); got != want {
				t.Fatalf("validate(%q, wildcards=%v) ok=%v, want %v", s, wild, got, want)
			}
		}
	})
}

func TestSubjectCovers(t *testing.T) {
	tests := []struct {
		pattern, sub string
		want         bool
	}{
		{"orders.>", "orders.created", true},
		{"orders.>", "orders.eu.created", true},
		{"orders.>", "orders", false},
		{"orders.*", "orders.created", true},
		{"orders.*", "orders.eu.created", false},
		{"orders.*", "orders.>", false},
		{"orders.>", "orders.*", true},
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
	}
	for _, tt := range tests {
		if got := subjectCovers(tt.pattern, tt.sub); got != tt.want {
			t.Errorf("subjectCovers(%q, %q) = %v, want %v", tt.pattern, tt.sub, got, tt.want)
		}
	}
}
