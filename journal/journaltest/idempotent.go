package journaltest

import (
	"context"
	"errors"
	"slices"
	"testing"

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

// CheckIdempotent is the conformance check of Store.Idempotent: unknown
// keys, a recorded key with its result and reply, keys per stream, bad
// stream ids. It appends to the stream "idem/1" and "idem/2".
func CheckIdempotent(t testing.TB, s journal.Store) {
	t.Helper()
	ctx := context.Background()
	if _, ok, err := s.Idempotent(ctx, "idem/1", "k1"); ok || err != nil {
		t.Fatalf("unknown key: ok=%v err=%v", ok, err)
	}
	first, err := s.Append(ctx, journal.AppendRequest{Stream: "idem/1", Events: []journal.Event{{Type: "A"}, {Type: "B"}},
		IdempotencyKey: "k1", Reply: []byte(`{"ok":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	r, ok, err := s.Idempotent(ctx, "idem/1", "k1")
	if err != nil || !ok || !r.Duplicate || string(r.Reply) != `{"ok":1}` ||
		r.FirstSequence != first.FirstSequence || r.LastSequence != first.LastSequence ||
		r.FirstPosition != first.FirstPosition || r.LastPosition != first.LastPosition {
		t.Fatalf("recorded key: %+v ok=%v err=%v, first append %+v", r, ok, err, first)
	}
	if _, ok, err := s.Idempotent(ctx, "idem/2", "k1"); ok || err != nil {
		t.Fatalf("the key of another stream: ok=%v err=%v", ok, err)
	}
	if _, _, err := s.Idempotent(ctx, "nokind", "k1"); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("bad stream id: %v", err)
	}
}
