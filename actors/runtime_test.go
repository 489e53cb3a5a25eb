package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The counter domain exercises the runtime: adding, panicking, blocking,
// and timers.
type (
	Counter struct {
		Value int `json:"value"`
		Adds  int `json:"adds"`
	}
	Add      struct{ N int }
	Get      struct{}
	Boom     struct{}
	Block    struct{}
	Schedule struct {
		ID      string
		AfterMs int
		N       int
	}
	Unschedule struct{ ID string }
	Added      struct{ N int }
)

// release unblocks Block commands; blocked signals that one started.
var (
	release = make(chan struct{})
	blocked = make(chan struct{}, 16)
)

func counterKind() *actors.Kind[Counter] {
	k := actors.NewKind("counter", func(string) Counter { return Counter{} })
	actors.Handle(k, func(s Counter, c Add) (actors.Decision, error) {
		if c.N == 0 {
			return actors.Decision{}, actors.Reject("nothing to add")
		}
		return actors.Decision{Events: []any{Added{c.N}}, Reply: s.Value + c.N}, nil
	})
	actors.Handle(k, func(s Counter, _ Get) (actors.Decision, error) { return actors.Decision{Reply: s}, nil })
	actors.Handle(k, func(s Counter, _ Boom) (actors.Decision, error) { panic("boom") })
	actors.Handle(k, func(s Counter, _ Block) (actors.Decision, error) {
		blocked <- struct{}{}
		<-release
		return actors.Decision{}, nil
	})
	actors.Handle(k, func(s Counter, c Schedule) (actors.Decision, error) {
		return actors.Decision{Schedule: []actors.Timer{{ID: c.ID, After: time.Duration(c.AfterMs) * time.Millisecond, Command: Add{c.N}}}}, nil
	})
	actors.Handle(k, func(s Counter, c Unschedule) (actors.Decision, error) {
		return actors.Decision{Cancel: []string{c.ID}}, nil
	})
	actors.On(k, func(s Counter, e Added) Counter { s.Value += e.N; s.Adds++; return s })
	return k
}

func start(t *testing.T, dir string, mod func(*actors.Config), setup ...func(*actors.Runtime) error) *actorstest.Node {
	cfg := actorstest.Config{Dir: dir, Setup: func(rt *actors.Runtime) error {
		if err := rt.Register(counterKind()); err != nil {
			return err
		}
		for _, s := range setup {
			if err := s(rt); err != nil {
				return err
			}
		}
		return nil
	}}
	if mod != nil {
		mod(&cfg.Runtime)
	}
	return actorstest.Start(t, cfg)
}

func get(t *testing.T, n *actorstest.Node, id string) Counter {
	t.Helper()
	out, err := n.Send(context.Background(), "counter", id, Get{})
	if err != nil {
		t.Fatal(err)
	}
	var c Counter
	if err := json.Unmarshal(out.Reply, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRecoveryFromSnapshotEqualsRecoveryFromEvents(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := start(t, dir, func(c *actors.Config) { c.SnapshotEvery = 10 })
	for i := 1; i <= 25; i++ {
		if _, err := n.Send(ctx, "counter", "c1", Add{i}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := n.Journal.LoadSnapshot(ctx, "counter/c1")
	if err != nil || snap.Sequence != 20 {
		t.Fatalf("snapshot at %d (%v), want 20", snap.Sequence, err)
	}

	// Events alone: fold every event of the stream with the kind's appliers.
	k := counterKind()
	fromEvents := k.Initial("c1")
	for ev, err := range n.Journal.Read(ctx, "counter/c1", 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		var a Added
		if err := json.Unmarshal(ev.Payload, &a); err != nil {
			t.Fatal(err)
		}
		fromEvents, _ = k.Apply(fromEvents, a)
	}

	n = n.Restart(t) // recovers from the snapshot at 20, then events 21..25
	if got := get(t, n, "c1"); got != fromEvents || got.Value != 325 || got.Adds != 25 {
		t.Fatalf("recovered %+v, events alone give %+v (want value 325)", got, fromEvents)
	}
}

func TestIdempotencyKeySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := start(t, dir, nil)
	first, err := n.SendKey(ctx, "counter", "c1", "pay-1", Add{5})
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := n.SendKey(ctx, "counter", "c1", "pay-1", Add{5})
	if err != nil || !again.Duplicate || string(again.Reply) != "5" || again.Position != first.Position {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	// The repeat is recognised before the handler runs: even a command the
	// state would now reject returns the first reply.
	if _, err := n.SendKey(ctx, "counter", "c1", "zero-1", Add{5}); err != nil {
		t.Fatal(err)
	}
	if out, err := n.SendKey(ctx, "counter", "c1", "zero-1", Add{0}); err != nil || !out.Duplicate || string(out.Reply) != "10" {
		t.Fatalf("a repeat whose handler would reject: %+v %v", out, err)
	}
	n = n.Restart(t)
	again, err = n.SendKey(ctx, "counter", "c1", "pay-1", Add{5})
	if err != nil || !again.Duplicate || string(again.Reply) != "5" {
		t.Fatalf("repeat after restart: %+v %v", again, err)
	}
	if got := get(t, n, "c1"); got.Value != 10 || got.Adds != 2 {
		t.Fatalf("state %+v: a repeat was applied", got)
	}
	info, err := n.Journal.Info(ctx, "counter/c1")
	if err != nil || info.LastSequence != 2 {
		t.Fatalf("stream has %d events (%v), want 2", info.LastSequence, err)
	}
}

func TestPanicFailsOneCommandOnly(t *testing.T) {
	ctx := context.Background()
	n := start(t, "", nil)
	for _, id := range []string{"a", "b"} {
		if _, err := n.Send(ctx, "counter", id, Add{3}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := n.Send(ctx, "counter", "a", Boom{})
	var pe *actors.PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("Boom: %v", err)
	}
	if got := get(t, n, "a"); got.Value != 3 {
		t.Fatalf("a after panic: %+v", got)
	}
	if out, err := n.Send(ctx, "counter", "b", Add{1}); err != nil || string(out.Reply) != "4" {
		t.Fatalf("b after a's panic: %v %v", out, err)
	}
}

func TestTimerFiresOnceAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := start(t, dir, nil)
	if _, err := n.Send(ctx, "counter", "t1", Schedule{ID: "soon", AfterMs: 50, N: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Send(ctx, "counter", "t1", Schedule{ID: "later", AfterMs: 700, N: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Send(ctx, "counter", "t1", Schedule{ID: "never", AfterMs: 100, N: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Send(ctx, "counter", "t1", Unschedule{ID: "never"}); err != nil {
		t.Fatal(err)
	}
	actorstest.Eventually(t, 5*time.Second, func() bool { return get(t, n, "t1").Value == 7 })

	// Restart before "later" is due: it must fire after the restart, once.
	n = n.Restart(t)
	actorstest.Eventually(t, 10*time.Second, func() bool { return get(t, n, "t1").Value == 107 })
	n = n.Restart(t)
	time.Sleep(300 * time.Millisecond) // give a wrongly re-fired timer the chance to show
	if got := get(t, n, "t1"); got.Value != 107 || got.Adds != 2 {
		t.Fatalf("after another restart %+v, want value 107 from 2 adds", got)
	}
	fired := 0
	for ev, err := range n.Journal.Read(ctx, "counter/t1", 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "$TimerFired" {
			fired++
		}
	}
	if fired != 2 {
		t.Fatalf("%d $TimerFired events, want 2", fired)
	}
}

func TestPassivationAndRecovery(t *testing.T) {
	ctx := context.Background()
	n := start(t, "", func(c *actors.Config) { c.PassivateAfter = 20 * time.Millisecond })
	for i := range 10 {
		if _, err := n.Send(ctx, "counter", fmt.Sprint("p", i), Add{i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	actorstest.Eventually(t, 5*time.Second, func() bool { return n.RT.LiveEntities() == 0 })
	if got := get(t, n, "p9"); got.Value != 10 {
		t.Fatalf("recovered %+v after passivation", got)
	}
}

func TestMailboxFullIsAClearRetryableError(t *testing.T) {
	ctx := context.Background()
	n := start(t, "", func(c *actors.Config) { c.MailboxSize = 1 })
	done := make(chan error, 1)
	go func() { _, err := n.Send(ctx, "counter", "m", Block{}); done <- err }()
	<-blocked
	_, err := n.Send(ctx, "counter", "m", Add{1})
	var full *actors.MailboxFullError
	if !errors.As(err, &full) || full.Stream != "counter/m" {
		t.Fatalf("second command: %v, want MailboxFullError", err)
	}
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A caller that sends as soon as it has its answer always finds
	// room: the command left the mailbox before it was answered.
	for i := range 1000 {
		if _, err := n.Send(ctx, "counter", "m", Add{1}); err != nil {
			t.Fatalf("command %d after the mailbox drained: %v", i, err)
		}
	}
}

// A projection killed in the middle of a batch resumes from its checkpoint:
// the read model (a sum and a count, which a double application would
// inflate) ends exact.
func TestProjectionResumesWithoutDoubleApplication(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var kill atomic.Bool
	killed := make(chan struct{})
	var once sync.Once
	sum := func(rt *actors.Runtime) error {
		if err := rt.RegisterProjection(actors.Projection{
			Name:   "sum",
			Filter: journal.Filter{Kind: "counter"},
			Apply: func(tx *actors.Tx, ev journal.Event) error {
				if kill.Load() && ev.Position == 300 {
					once.Do(func() { close(killed) })
					return errors.New("killed mid-batch")
				}
				var a Added
				if err := json.Unmarshal(ev.Payload, &a); err != nil {
					return err
				}
				var m struct{ Sum, Count int }
				if _, err := tx.GetJSON("total", &m); err != nil {
					return err
				}
				m.Sum += a.N
				m.Count++
				return tx.SetJSON("total", m)
			},
		}); err != nil {
			return err
		}
		return rt.RegisterQuery(actors.Query{Name: "total", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			var m struct{ Sum, Count int }
			_, err := v.GetJSON("total", &m)
			return m, err
		}})
	}
	kill.Store(true)
	n := start(t, dir, nil, sum)
	want := 0
	for i := 1; i <= 400; i++ {
		if _, err := n.Send(ctx, "counter", fmt.Sprint("c", i%7), Add{i}); err != nil {
			t.Fatal(err)
		}
		want += i
	}
	<-killed
	st := n.RT.Projections()
	var pos uint64
	for _, s := range st {
		if s.Name == "sum" {
			pos = s.Position
		}
	}
	if pos >= 300 || pos == 0 {
		t.Fatalf("checkpoint %d before the kill, want a committed batch before 300", pos)
	}
	kill.Store(false)
	n = n.Restart(t)
	var m struct{ Sum, Count int }
	if _, err := n.Query(ctx, "total", nil, journal.TokenAt(0, 400), &m); err != nil {
		t.Fatal(err)
	}
	if m.Sum != want || m.Count != 400 {
		t.Fatalf("read model sum %d count %d, want %d and 400", m.Sum, m.Count, want)
	}
}

// A projection that the new events pass by (its filter matches none of
// them) saves its checkpoint lazily: no read-store write per step. A
// restart then re-reads those events from the older checkpoint, applies
// none of them, and the read model stays exact.
func TestProjectionPassedByEventsSavesItsCheckpointLazily(t *testing.T) {
	// Restored after the nodes' own cleanups have stopped them (cleanups
	// run last first).
	t.Cleanup(actors.SetSkipSaveEvery(time.Hour))
	ctx := context.Background()
	tally := func(rt *actors.Runtime) error {
		k := actors.NewKind("tally", func(string) Counter { return Counter{} })
		actors.Handle(k, func(s Counter, c Add) (actors.Decision, error) {
			return actors.Decision{Events: []any{Added{c.N}}}, nil
		})
		actors.On(k, func(s Counter, e Added) Counter { s.Value += e.N; return s })
		if err := rt.Register(k); err != nil {
			return err
		}
		if err := rt.RegisterProjection(actors.Projection{
			Name:   "tallies",
			Filter: journal.Filter{Kind: "tally"},
			Apply: func(tx *actors.Tx, ev journal.Event) error {
				var a Added
				if err := json.Unmarshal(ev.Payload, &a); err != nil {
					return err
				}
				var sum int
				if _, err := tx.GetJSON("sum", &sum); err != nil {
					return err
				}
				return tx.SetJSON("sum", sum+a.N)
			},
		}); err != nil {
			return err
		}
		return rt.RegisterQuery(actors.Query{Name: "tally", Projection: "tallies", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			var sum int
			_, err := v.GetJSON("sum", &sum)
			return sum, err
		}})
	}
	sum := func(n *actorstest.Node, at journal.Token) int {
		t.Helper()
		var got int
		if _, err := n.Query(ctx, "tally", nil, at, &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	stored := func(n *actorstest.Node) uint64 {
		t.Helper()
		pos, err := actors.StoredCheckpoint(n.RT, "tallies", 0)
		if err != nil {
			t.Fatal(err)
		}
		return pos
	}
	n := start(t, t.TempDir(), nil, tally)
	out, err := n.Send(ctx, "tally", "t", Add{5})
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(n, out.Token()); got != 5 {
		t.Fatalf("sum %d, want 5", got)
	}
	applied := out.Position
	if got := stored(n); got != applied {
		t.Fatalf("checkpoint after an applied event: %d, want %d (saved with it)", got, applied)
	}
	for i := range 30 {
		if out, err = n.Send(ctx, "counter", fmt.Sprint("c", i%3), Add{1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := sum(n, out.Token()); got != 5 { // the projection passed them by
		t.Fatalf("sum %d, want 5", got)
	}
	if got := stored(n); got != applied {
		t.Fatalf("checkpoint after 30 passed-by events: %d, want still %d (no write per step)", got, applied)
	}
	for range 2 {
		n = n.Restart(t)
		if got := sum(n, out.Token()); got != 5 {
			t.Fatalf("after a restart: sum %d, want 5", got)
		}
	}
	if out, err = n.Send(ctx, "tally", "t", Add{7}); err != nil {
		t.Fatal(err)
	}
	if got := sum(n, out.Token()); got != 12 {
		t.Fatalf("sum %d, want 12", got)
	}
	if got := stored(n); got != out.Position {
		t.Fatalf("checkpoint after an applied event: %d, want %d", got, out.Position)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	n := start(t, "", nil)
	tests := []struct {
		name string
		kind string
		typ  string
		body string
		want string
	}{
		{"unknown kind", "dragon", "Add", `{}`, `unknown entity kind "dragon"`},
		{"unknown command", "counter", "Steal", `{}`, `has no command "Steal"`},
		{"payload does not decode", "counter", "Add", `{"N":"x"}`, "payload does not decode"},
		{"trailing garbage", "counter", "Add", `{"N":1} {}`, "trailing data"},
		{"rejection", "counter", "Add", `{"N":0}`, "nothing to add"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := actors.NewCommand(tt.kind, "x", Get{})
			c.Type, c.Payload = tt.typ, []byte(tt.body)
			if _, err := n.RT.Send(ctx, c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := n.Query(ctx, "nope", nil, journal.Token{}, nil); err == nil || !strings.Contains(err.Error(), `unknown query "nope"`) {
		t.Fatalf("unknown query: %v", err)
	}
	if info, _ := n.Journal.Info(ctx, "counter/x"); info.LastSequence != 0 {
		t.Fatalf("bad input appended %d events", info.LastSequence)
	}
}

func TestEventSidecarSkipsAndRewritesEventsForProjections(t *testing.T) {
	ctx := context.Background()
	sum := func(rt *actors.Runtime) error {
		if err := rt.RegisterProjection(actors.Projection{
			Name:   "sum",
			Filter: journal.Filter{Kind: "counter"},
			Apply: func(tx *actors.Tx, ev journal.Event) error {
				var a Added
				if err := json.Unmarshal(ev.Payload, &a); err != nil {
					return err
				}
				var total int
				if _, err := tx.GetJSON("total", &total); err != nil {
					return err
				}
				return tx.SetJSON("total", total+a.N)
			},
		}); err != nil {
			return err
		}
		return rt.RegisterQuery(actors.Query{Name: "total", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			var total int
			_, err := v.GetJSON("total", &total)
			return total, err
		}})
	}
	n := start(t, "", func(c *actors.Config) {
		c.InterceptEvent = func(_ context.Context, projection string, ev *journal.Event) error {
			switch string(ev.Payload) {
			case `{"N":2}`:
				return &actors.RejectedError{Reason: "no twos"}
			case `{"N":3}`:
				ev.Payload = []byte(`{"N":30}`)
			}
			return nil
		}
	}, sum)
	var last journal.Token
	for i := 1; i <= 3; i++ {
		out, err := n.Send(ctx, "counter", "s", Add{i})
		if err != nil {
			t.Fatal(err)
		}
		last = out.Token()
	}
	var total int
	if _, err := n.Query(ctx, "total", nil, last, &total); err != nil {
		t.Fatal(err)
	}
	if total != 31 {
		t.Fatalf("total %d, want 31 (1, 2 skipped, 3 rewritten to 30)", total)
	}
	// The journal itself is untouched: the entity still counts 1+2+3.
	if got := get(t, n, "s"); got.Value != 6 {
		t.Fatalf("entity %+v", got)
	}
}

func TestRegisterAfterStartIsRefused(t *testing.T) {
	n := start(t, "", nil)
	err := n.RT.Register(actors.NewKind("late", func(string) struct{} { return struct{}{} }))
	if err == nil || !strings.Contains(err.Error(), `kind "late" registered after Start`) {
		t.Fatalf("Register after Start = %v", err)
	}
}

// Shutdown refuses new commands at once, waits for the ones in flight, and
// reports the ones still running when its context ends.
func TestShutdownWaitsForCommandsInFlight(t *testing.T) {
	ctx := context.Background()
	n := start(t, "", nil)
	done := make(chan error, 1)
	go func() { _, err := n.Send(ctx, "counter", "s", Block{}); done <- err }()
	<-blocked
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- n.RT.Shutdown(short) }()
	actorstest.Eventually(t, 5*time.Second, func() bool {
		_, err := n.Send(ctx, "counter", "s2", Add{1})
		return errors.Is(err, actors.ErrClosed)
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a command was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Past its deadline, Shutdown stops the entities, which waits for the
	// running handler.
	release <- struct{}{}
	if err := <-shut; err == nil || !strings.Contains(err.Error(), "commands still in flight") {
		t.Fatalf("Shutdown with a command blocked past its deadline = %v", err)
	}
	<-done
}
