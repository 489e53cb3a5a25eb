// Package journal defines Troupe's event store: the Store interface, its
// events, requests and errors. Entities append their events to a stream
// ("<kind>/<id>") with optimistic concurrency; every event also gets a
// position in the store's global log, which projections, the events
// publisher and `troupe events` read in commit order.
//
// The Badger implementation is package journal/badgerstore; the in-memory
// store and the conformance suite every store passes are in
// journal/journaltest.
//
//	res, err := store.Append(ctx, journal.AppendRequest{
//		Stream:   journal.StreamID("account", "acc-1"),
//		Expected: 0, // a new stream
//		Events:   []journal.Event{{Type: "Opened", Payload: []byte(`{"owner":"ada"}`)}},
//	})
//	var conflict *journal.ConflictError
//	if errors.As(err, &conflict) { ... someone else appended first ... }
//	for ev, err := range store.Read(ctx, "account/acc-1", 1, 0) { ... }
package journal
