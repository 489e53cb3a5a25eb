package journaltest_test

import (
	"testing"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

func TestMemStoreConformance(t *testing.T) {
	journaltest.Run(t, journaltest.Suite{
		Open: func(t *testing.T) journal.Store { return journaltest.NewMemStore(journaltest.MemConfig{}) },
		Reopen: func(t *testing.T, s journal.Store) journal.Store {
			return s.(*journaltest.MemStore).Reopen()
		},
	})
}
