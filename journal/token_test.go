package journal_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/journal"
)

func TestTokenRoundTripAndMerge(t *testing.T) {
	a := journal.TokenAt(3, 17).Merge(journal.TokenAt(0, 5)).Merge(journal.TokenAt(200, 1<<40))
	b, err := journal.ParseToken(a.String())
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != a.String() || !slices.Equal(b.Partitions(), []int{0, 3, 200}) || b.Position(200) != 1<<40 || b.Position(7) != 0 {
		t.Fatalf("round trip of %s gave %s (%v)", a, b, b.Partitions())
	}
	if !strings.HasPrefix(a.String(), "t1.") {
		t.Fatalf("token %q", a)
	}
	m, err := journal.ParseToken(journal.TokenAt(3, 20).String() + "," + journal.TokenAt(3, 9).String() + ", 12")
	if err != nil {
		t.Fatal(err)
	}
	if m.Position(3) != 20 || m.Position(0) != 12 {
		t.Fatalf("merge: %d %d, want the maximum per partition 20 and 12", m.Position(3), m.Position(0))
	}
	for _, s := range []string{"", " ", ",,"} {
		if z, err := journal.ParseToken(s); err != nil || !z.IsZero() || z.String() != "" {
			t.Fatalf("ParseToken(%q) = %v, %v; want the zero token", s, z, err)
		}
	}
	if journal.TokenAt(1, 0).IsZero() != true {
		t.Fatal("a zero position asks for nothing")
	}
}

func TestBadTokensAreRefused(t *testing.T) {
	for _, s := range []string{"abc", "t1.!!", "t1.", "-5", "t1.AA", "t1.AQ", "t1.AAEAAQ", "t2.AQE"} {
		if _, err := journal.ParseToken(s); !errors.Is(err, journal.ErrBadToken) {
			t.Errorf("ParseToken(%q) = %v, want ErrBadToken", s, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(journal.TokenAt(3, 17).Merge(journal.TokenAt(0, 5)).String())
	f.Add("42")
	f.Add("t1.AQE,7")
	f.Add("t1.____")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := journal.ParseToken(s)
		if err != nil {
			if !errors.Is(err, journal.ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		again, err := journal.ParseToken(tok.String())
		if err != nil || again.String() != tok.String() {
			t.Fatalf("%q parsed to %q, which reparses to %q (%v)", s, tok, again, err)
		}
		for _, p := range tok.Partitions() {
			if tok.Position(p) == 0 || p < 0 {
				t.Fatalf("partition %d position %d", p, tok.Position(p))
			}
		}
	})
}
