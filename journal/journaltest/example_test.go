package journaltest_test

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

func ExampleNewMemStore() {
	s := journaltest.NewMemStore(journaltest.MemConfig{})
	defer s.Close()
	ctx := context.Background()
	s.Append(ctx, journal.AppendRequest{Stream: "order/1", Events: []journal.Event{{Type: "Placed"}}})
	s.Append(ctx, journal.AppendRequest{Stream: "invoice/1", Events: []journal.Event{{Type: "Issued"}}})
	for ev, err := range s.ReadAll(ctx, 0, 0, journal.Filter{Kind: "order"}, 0) {
		fmt.Println(ev.Position, ev.Stream, ev.Type, err)
	}
	// Output:
	// 1 order/1 Placed <nil>
}
