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
	sync, err := badgerstore.ParseSyncPolicy(cfg.Sync)
	if err != nil {
		return nil, err
	}
	return badgerstore.Open(badgerstore.Config{
		Dir:          filepath.Join(cfg.DataDir, "journal"),
		Sync:         sync,
		SyncInterval: cfg.SyncInterval,
		ReadOnly:     readOnly,
		Logger:       log,
	})
}
