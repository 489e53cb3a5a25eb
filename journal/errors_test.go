package journal_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/journal"
)

func TestOwnershipErrors(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		notOwner  bool
		fenced    bool
		inMessage []string
	}{
		{"not owner", &journal.NotOwnerError{Partition: 3}, true, false, []string{"partition 3", "not owned"}},
		{"fenced", &journal.FencedError{Partition: 5, Epoch: 7, By: "node-b", ByEpoch: 8}, true, true, []string{"partition 5", "fenced", `"node-b"`, "epoch 8", "epoch 7", "did not happen"}},
		{"fenced by an unknown writer", &journal.FencedError{Partition: 0, Epoch: 1}, true, true, []string{"another writer"}},
		{"wrapped", fmt.Errorf("append to %q: %w", "a/1", &journal.FencedError{Partition: 1, Epoch: 1}), true, true, []string{"append to"}},
		{"conflict", &journal.ConflictError{Stream: "a/1"}, false, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, journal.ErrNotOwner); got != tt.notOwner {
				t.Errorf("errors.Is(ErrNotOwner) = %v", got)
			}
			if got := errors.Is(tt.err, journal.ErrFenced); got != tt.fenced {
				t.Errorf("errors.Is(ErrFenced) = %v", got)
			}
			for _, s := range tt.inMessage {
				if !strings.Contains(tt.err.Error(), s) {
					t.Errorf("message %q lacks %q", tt.err, s)
				}
			}
		})
	}
	if !errors.Is(journal.ErrFenced, journal.ErrNotOwner) {
		t.Error("ErrFenced does not wrap ErrNotOwner")
	}
}
