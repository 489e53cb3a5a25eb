package journaltest_test

import (
	"fmt"
	"testing"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

func TestMemStoreConformance(t *testing.T) {
	// One partition, as a single node's log; several, as a cluster's.
	for _, parts := range []int{1, 4, 7} {
		t.Run(fmt.Sprintf("partitions=%d", parts), func(t *testing.T) {
			journaltest.Run(t, journaltest.Suite{
				Open: func(t *testing.T) journal.Store {
					return journaltest.NewMemStore(journaltest.MemConfig{Partitions: parts})
				},
				Reopen: func(t *testing.T, s journal.Store) journal.Store {
					return s.(*journaltest.MemStore).Reopen()
				},
			})
		})
	}
}
