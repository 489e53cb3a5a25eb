// Package journaltest is the test kit of package journal: an in-memory
// Store with the semantics and errors of the Badger store, and the
// conformance suite that every journal.Store implementation must pass.
//
// A store's tests run the suite with a constructor (and, for durable
// stores, a reopen function for the restart tests):
//
//	func TestConformance(t *testing.T) {
//		journaltest.Run(t, journaltest.Suite{
//			Open: func(t *testing.T) journal.Store { return journaltest.NewMemStore(journaltest.MemConfig{}) },
//			Reopen: func(t *testing.T, s journal.Store) journal.Store { return s.(*journaltest.MemStore).Reopen() },
//		})
//	}
//
// Code that uses a journal can test against NewMemStore directly. MemStore
// is safe for concurrent use; Reopen hands the data to a new handle and
// closes the old one, which models a restart.
package journaltest
