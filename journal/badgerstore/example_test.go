package badgerstore_test

import (
	"context"
	"fmt"
	"os"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

func Example() {
	dir, _ := os.MkdirTemp("", "journal-example-")
	defer os.RemoveAll(dir)
	s, err := badgerstore.Open(badgerstore.Config{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx := context.Background()
	stream := journal.StreamID("account", "42")
	res, err := s.Append(ctx, journal.AppendRequest{
		Stream:   stream,
		Expected: 0, // a new stream
		Events: []journal.Event{
			{Type: "Opened", Payload: []byte(`{"owner":"ada"}`)},
			{Type: "Deposited", Payload: []byte(`{"amount":5}`)},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("appended sequences", res.FirstSequence, "to", res.LastSequence)

	// A writer that decided on a stale state is refused.
	_, err = s.Append(ctx, journal.AppendRequest{Stream: stream, Expected: 1, Events: []journal.Event{{Type: "Withdrawn"}}})
	fmt.Println(err)

	for ev, err := range s.Read(ctx, stream, 1, 0) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(ev.Sequence, ev.Position, ev.Type, string(ev.Payload))
	}
	// Output:
	// appended sequences 1 to 2
	// journal: conflict on stream "account/42": expected sequence 1, actual 2
	// 1 1 Opened {"owner":"ada"}
	// 2 2 Deposited {"amount":5}
}
