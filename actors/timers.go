package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/troupe-dev/troupe/journal"
)

// timerService wakes entities whose timers are due. The source of truth for
// a timer is its entity's stream ($TimerScheduled, then $TimerFired or
// $TimerCancelled); the service only needs to know when to wake whom, which
// it reads from an index kept by an internal projection over the "$timers"
// tag. So pending timers survive restarts without scanning the journal.
type timerService struct {
	rt *Runtime

	mu     sync.Mutex
	woken  map[string]time.Time // "stream\x00id" -> when we last woke it
	pokeCh chan struct{}
}

const (
	timersProjection = "$timers"
	// rewakeAfter is how long the service waits for a woken timer to be
	// recorded as fired before waking its entity again.
	rewakeAfter = 5 * time.Second
)

func newTimerService(rt *Runtime) *timerService {
	return &timerService{rt: rt, woken: map[string]time.Time{}, pokeCh: make(chan struct{}, 1)}
}

// poke tells the scheduler that the index changed (called after the
// timers projection commits timer events).
func (ts *timerService) poke() {
	select {
	case ts.pokeCh <- struct{}{}:
	default:
	}
}

// Index keys: "due/<at, 20 digits>/<stream>\x00<id>" and
// "idx/<stream>\x00<id>" -> the due key, to find it again on fire/cancel.
func dueKey(at int64, stream, id string) string {
	return fmt.Sprintf("due/%020d/%s\x00%s", at, stream, id)
}

func (ts *timerService) projection() Projection {
	return Projection{
		Name:   timersProjection,
		Filter: journal.Filter{Tag: timersTag},
		Apply: func(tx *Tx, ev journal.Event) error {
			var t timerRecord
			if err := json.Unmarshal(ev.Payload, &t); err != nil {
				return fmt.Errorf("%s event %d: %w", ev.Stream, ev.Sequence, err)
			}
			idx := "idx/" + ev.Stream + "\x00" + t.ID
			old, ok, err := tx.Get(idx)
			if err != nil {
				return err
			}
			if ok {
				if err := tx.Delete(string(old)); err != nil {
					return err
				}
			}
			switch ev.Type {
			case evTimerScheduled:
				k := dueKey(t.At, ev.Stream, t.ID)
				if err := tx.Set(k, nil); err != nil {
					return err
				}
				return tx.Set(idx, []byte(k))
			case evTimerFired, evTimerCancelled:
				return tx.Delete(idx)
			}
			return nil
		},
		committed: ts.poke,
	}
}

// run wakes entities with due timers until ctx ends.
func (ts *timerService) run(ctx context.Context) {
	p := ts.rt.projections[timersProjection]
	for {
		next, err := ts.wakeDue(ctx, p)
		if err != nil && ctx.Err() == nil {
			ts.rt.log.Error("timer scan failed", "err", err)
			next = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-ts.pokeCh:
		case <-t.C:
		}
		t.Stop()
	}
}

// wakeDue wakes the entities of every due timer and returns how long to
// sleep before the next one is due.
func (ts *timerService) wakeDue(ctx context.Context, p *projection) (time.Duration, error) {
	now := ts.rt.now()
	next := time.Hour
	var due []string // streams
	seen := map[string]bool{}
	err := ts.rt.cfg.ReadStore.db.View(func(txn *badger.Txn) error {
		v := &View{txn: txn, projection: p.def.Name}
		for kv, err := range v.Scan("due/", "", 0) {
			if err != nil {
				return err
			}
			rest := strings.TrimPrefix(kv.Key, "due/")
			atStr, key, _ := strings.Cut(rest, "/")
			at, err := strconv.ParseInt(atStr, 10, 64)
			if err != nil {
				return fmt.Errorf("timer index key %q: %w", kv.Key, err)
			}
			if at > now.UnixNano() {
				next = min(next, time.Duration(at-now.UnixNano()))
				return nil
			}
			ts.mu.Lock()
			last, woken := ts.woken[key]
			if !woken || now.Sub(last) >= rewakeAfter {
				ts.woken[key] = now
				stream, _, _ := strings.Cut(key, "\x00")
				if !seen[stream] {
					seen[stream] = true
					due = append(due, stream)
				}
			} else {
				next = min(next, rewakeAfter-now.Sub(last))
			}
			ts.mu.Unlock()
		}
		return nil
	})
	for _, stream := range due {
		if ctx.Err() != nil {
			break
		}
		kind, id, perr := journal.ParseStream(stream)
		if perr != nil {
			continue
		}
		ts.rt.mu.Lock()
		k, ok := ts.rt.kinds[kind]
		ts.rt.mu.Unlock()
		if !ok {
			ts.rt.log.Warn("timer of an unregistered kind", "stream", stream)
			continue
		}
		// A timer fires on the node that owns its entity's shard.
		shard := ts.rt.placement.ShardOf(kind, id)
		if _, local := ts.rt.placement.Owner(shard); !local {
			continue
		}
		if derr := ts.rt.deliver(k, shard, stream, id, &wake{}); derr != nil {
			ts.rt.log.Warn("could not wake entity for its timer", "actor", stream, "err", derr)
		}
	}
	ts.forgetFired(now)
	return next, err
}

// forgetFired drops wake records old enough that the timer either fired or
// will be woken again.
func (ts *timerService) forgetFired(now time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for k, t := range ts.woken {
		if now.Sub(t) > 10*rewakeAfter {
			delete(ts.woken, k)
		}
	}
}
