package actors_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

// A snapshot in a format this build does not read is reported with its
// version, and without a nil error in the message.
func TestSnapshotOfAnotherVersionIsNamed(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := start(t, dir, func(c *actors.Config) { c.SnapshotEvery = 2 })
	tests := []struct{ id, data, want string }{
		{"newer", `{"v":2,"state":{}}`, "snapshot at sequence 2 has format version 2; this build reads version 1"},
		{"garbled", `{"v":`, "snapshot at sequence 2 does not decode: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		for i := 1; i <= 2; i++ {
			if _, err := n.Send(ctx, "counter", tt.id, Add{i}); err != nil {
				t.Fatal(err)
			}
		}
		// The entity snapshots itself at sequence 2 after it answers the
		// command: wait for that snapshot, so that it does not replace
		// the one written here.
		actorstest.Eventually(t, 10*time.Second, func() bool {
			snap, err := n.Journal.LoadSnapshot(ctx, "counter/"+tt.id)
			return err == nil && snap.Sequence == 2
		})
		if err := n.Journal.SaveSnapshot(ctx, journal.Snapshot{Stream: "counter/" + tt.id, Sequence: 2, Data: []byte(tt.data)}); err != nil {
			t.Fatal(err)
		}
	}
	n = n.Restart(t)
	for _, tt := range tests {
		_, err := n.Send(ctx, "counter", tt.id, Add{1})
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "nil") {
			t.Errorf("send to %s after a bad snapshot: %v, want an error containing %q", tt.id, err, tt.want)
		}
	}
}
