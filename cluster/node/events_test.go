package node

import (
	"context"
	"fmt"
	"testing"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

// Tail with --last N and a filter prints the last N events that match,
// not the matching events among the last N positions.
func TestTailLastCountsMatchingEvents(t *testing.T) {
	st := journaltest.NewMemStore(journaltest.MemConfig{})
	defer st.Close()
	// 3 account events, then 50 events of another kind.
	for i := 1; i <= 3; i++ {
		journaltest.MustAppend(t, st, fmt.Sprintf("account/a%d", i), 0, journaltest.Ev("Opened", `{}`))
	}
	for i := 1; i <= 50; i++ {
		journaltest.MustAppend(t, st, fmt.Sprintf("other/o%d", i), 0, journaltest.Ev("Made", `{}`))
	}
	tests := []struct {
		name  string
		f     journal.Filter
		last  int
		wantN int
		first uint64 // position of the first event printed
	}{
		{"two of the kind", journal.Filter{Kind: "account"}, 2, 2, 2},
		{"more than there are", journal.Filter{Kind: "account"}, 10, 3, 1},
		{"none", journal.Filter{Kind: "account"}, 0, 0, 0},
		{"no filter counts positions", journal.Filter{}, 2, 2, 52},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []journal.Event
			err := Tail(context.Background(), st, 0, tt.f, 0, tt.last, false, func(ev journal.Event) error {
				got = append(got, ev)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantN || (tt.wantN > 0 && got[0].Position != tt.first) {
				t.Fatalf("got %d events (first %v), want %d from position %d", len(got), got, tt.wantN, tt.first)
			}
		})
	}
}
