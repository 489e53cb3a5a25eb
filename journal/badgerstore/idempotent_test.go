package badgerstore

import (
	"testing"

	"github.com/troupe-dev/troupe/journal/journaltest"
)

func TestIdempotent(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), Sync: SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	journaltest.CheckIdempotent(t, s)
}
