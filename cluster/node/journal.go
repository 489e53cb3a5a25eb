package node

import (
	"log/slog"
	"path/filepath"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

// OpenJournal opens the Badger journal in cfg.DataDir; read-only for
// inspection tools (the CLI reading a stopped node).
func OpenJournal(cfg Config, readOnly bool, log *slog.Logger) (journal.Store, error) {
	cfg = cfg.withDefaults()
	return badgerstore.Open(badgerstore.Config{
		Dir:          filepath.Join(cfg.DataDir, "journal"),
		Sync:         cfg.Sync,
		SyncInterval: cfg.SyncInterval,
		ReadOnly:     readOnly,
		// A read-only look at a killed node's data recovers Badger's log
		// first, as the node's next start would.
		RecoverReadOnly: readOnly,
		Logger:          log,
	})
}
