package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/troupe-dev/troupe/journal"
)

// Read-only views of the entities for operators (the dashboard): an
// entity's current state and the entities that are live in memory. Nothing
// here sends a message to an entity or changes one.

// inspector is implemented by every entity: it reports the recovered state.
type inspector interface {
	inspect() (state json.RawMessage, seq, pos uint64, err error)
}

func (e *entity[S]) inspect() (json.RawMessage, uint64, uint64, error) {
	b, err := json.Marshal(e.state)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("actors: state of %s does not encode as JSON: %w", e.stream, err)
	}
	return b, e.seq, e.pos, nil
}

// State returns the current state of the entity kind/id, encoded as JSON,
// and the sequence of the last event it reflects.
//
// It rebuilds the state from the journal (the latest snapshot, then the
// later events) into a copy of its own, exactly as the entity does when it
// recovers, rather than asking the live actor: that way it never waits in
// the entity's mailbox behind commands, never runs on the actor's goroutine,
// and cannot change anything. The journal is the source of truth; the live
// entity holds the same state once it has applied the events it appended.
// The cost is one snapshot load plus the events after it (at most the kind's
// snapshot interval).
//
// An unregistered kind is an *UnknownKindError; an entity with no events is
// a *NotFoundError. Safe for concurrent use.
func (rt *Runtime) State(ctx context.Context, kind, id string) (json.RawMessage, uint64, error) {
	if rt.closed.Load() {
		return nil, 0, ErrClosed
	}
	rt.mu.Lock()
	k, ok := rt.kinds[kind]
	rt.mu.Unlock()
	if !ok {
		return nil, 0, &UnknownKindError{Kind: kind}
	}
	if _, _, err := journal.ParseStream(journal.StreamID(kind, id)); err != nil {
		return nil, 0, err
	}
	e := k.newEntity(rt, id)
	if err := e.recover(ctx); err != nil {
		return nil, 0, err
	}
	in, ok := e.(inspector)
	if !ok {
		return nil, 0, fmt.Errorf("actors: kind %q cannot be inspected", kind)
	}
	state, seq, _, err := in.inspect()
	if err != nil {
		return nil, 0, err
	}
	if seq == 0 {
		return nil, 0, NotFound("entity %s", journal.StreamID(kind, id))
	}
	return state, seq, nil
}

// ActiveEntities reports how many entities of kind are live in memory on
// this node, and the ids of at most limit of them, sorted. It takes each
// shard's lock briefly, one shard at a time, so the answer is a moment's
// view, not an atomic one.
func (rt *Runtime) ActiveEntities(kind string, limit int) (ids []string, n int) {
	prefix := kind + "/"
	limit = max(limit, 0)
	// Keep the limit smallest ids: sort and cut whenever twice as many have
	// gathered, so a node with many live entities costs O(limit) memory.
	trim := func() {
		sort.Strings(ids)
		if len(ids) > limit {
			ids = ids[:limit]
		}
	}
	for i := range rt.entities {
		es := &rt.entities[i]
		es.mu.Lock()
		for stream := range es.m {
			if !strings.HasPrefix(stream, prefix) {
				continue
			}
			n++
			if limit > 0 {
				ids = append(ids, stream[len(prefix):])
				if len(ids) >= 2*limit {
					trim()
				}
			}
		}
		es.mu.Unlock()
	}
	trim()
	return ids, n
}
