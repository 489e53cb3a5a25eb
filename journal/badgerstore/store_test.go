package badgerstore

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return
	}
	code := m.Run()
	for _, dir := range []string{replayData.dir, interleavedData.dir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	if code == 0 {
		err := goleak.Find(
			// badger.Open leaks these two when it fails after starting
			// them (TestEncryption opens with a wrong key on purpose); a
			// store that opened and closed normally leaves neither behind.
			goleak.IgnoreTopFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
			goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// openT opens a store in a fresh directory (or cfg.Dir) and closes it at the
// end of the test.
func openT(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	for _, sync := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		t.Run(sync.String(), func(t *testing.T) {
			journaltest.Run(t, journaltest.Suite{
				Open: func(t *testing.T) journal.Store { return openT(t, Config{Sync: sync}) },
				Reopen: func(t *testing.T, s journal.Store) journal.Store {
					bs := s.(*Store)
					if err := bs.Close(); err != nil {
						t.Fatal(err)
					}
					return openT(t, bs.cfg)
				},
			})
		})
	}
}
