package journaltest

import (
	"context"
	"slices"

	"github.com/troupe-dev/troupe/journal"
)

// Idempotent looks up the idempotency record of key in stream.
func (m *MemStore) Idempotent(ctx context.Context, stream, key string) (journal.AppendResult, bool, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.AppendResult{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, false, err
	}
	if key == "" {
		return journal.AppendResult{}, false, nil
	}
	if err := m.lock(); err != nil {
		return journal.AppendResult{}, false, err
	}
	defer m.d.mu.Unlock()
	r, ok := m.d.idem[stream+"\x00"+key]
	if !ok {
		return journal.AppendResult{}, false, nil
	}
	r.Duplicate = true
	r.Reply = slices.Clone(r.Reply)
	return r, true, nil
}
