package journaltest

import "testing"

func TestMemStoreIdempotent(t *testing.T) {
	s := NewMemStore(MemConfig{})
	defer s.Close()
	CheckIdempotent(t, s)
}
