package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/troupe-dev/troupe/actors"
)

func TestStateReadsWithoutDisturbing(t *testing.T) {
	ctx := context.Background()
	n := start(t, t.TempDir(), func(c *actors.Config) { c.SnapshotEvery = 4 })
	for i := 1; i <= 6; i++ { // a snapshot at 4, then events 5 and 6
		if _, err := n.Send(ctx, "counter", "c1", Add{i}); err != nil {
			t.Fatal(err)
		}
	}
	live := n.RT.LiveEntities()

	tests := []struct {
		name    string
		kind    string
		id      string
		want    Counter
		wantSeq uint64
		wantErr any
	}{
		{name: "live entity after a snapshot", kind: "counter", id: "c1", want: Counter{Value: 21, Adds: 6}, wantSeq: 6},
		{name: "unknown kind", kind: "nope", id: "c1", wantErr: new(*actors.UnknownKindError)},
		{name: "entity without events", kind: "counter", id: "never", wantErr: new(*actors.NotFoundError)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, seq, err := n.RT.State(ctx, tt.kind, tt.id)
			if tt.wantErr != nil {
				if err == nil || !errors.As(err, tt.wantErr) {
					t.Fatalf("State = %s, %d, %v; want a %T", raw, seq, err, reflect.ValueOf(tt.wantErr).Elem().Interface())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got Counter
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("state %s: %v", raw, err)
			}
			if got != tt.want || seq != tt.wantSeq {
				t.Fatalf("State = %+v at %d, want %+v at %d", got, seq, tt.want, tt.wantSeq)
			}
		})
	}
	if got := n.RT.LiveEntities(); got != live {
		t.Fatalf("State spawned entities: %d live, was %d", got, live)
	}
	// The live entity agrees with the inspected copy.
	if got := get(t, n, "c1"); got != (Counter{Value: 21, Adds: 6}) {
		t.Fatalf("entity holds %+v after State", got)
	}
}

func TestStateDuringCommands(t *testing.T) {
	ctx := context.Background()
	n := start(t, t.TempDir(), nil)
	if _, err := n.Send(ctx, "counter", "c1", Add{1}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			if _, err := n.Send(ctx, "counter", "c1", Add{1}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Every state seen is a prefix of the history: value == adds == seq.
	for range 50 {
		raw, seq, err := n.RT.State(ctx, "counter", "c1")
		if err != nil {
			t.Fatal(err)
		}
		var c Counter
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		if c.Value != c.Adds || uint64(c.Adds) != seq {
			t.Fatalf("state %+v at sequence %d is not a prefix of the history", c, seq)
		}
	}
	wg.Wait()
}

func TestActiveEntities(t *testing.T) {
	ctx := context.Background()
	n := start(t, t.TempDir(), nil)
	for i := range 30 {
		if _, err := n.Send(ctx, "counter", fmt.Sprintf("c%02d", i), Add{1}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		kind  string
		limit int
		ids   []string
		n     int
	}{
		{"first five, sorted", "counter", 5, []string{"c00", "c01", "c02", "c03", "c04"}, 30},
		{"count only", "counter", 0, nil, 30},
		{"another kind", "count", 10, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, got := n.RT.ActiveEntities(tt.kind, tt.limit)
			if got != tt.n || !reflect.DeepEqual(ids, tt.ids) {
				t.Fatalf("ActiveEntities(%q, %d) = %v, %d; want %v, %d", tt.kind, tt.limit, ids, got, tt.ids, tt.n)
			}
		})
	}
}
