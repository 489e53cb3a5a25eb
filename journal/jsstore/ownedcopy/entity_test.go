package ownedcopy_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
)

// The account domain of the cluster benchmark: a deposit to an account
// whose state lacks its Open event is rejected "not open".
type (
	account struct {
		Open    bool `json:"open"`
		Balance int  `json:"balance"`
	}
	openAccount struct{}
	deposit     struct{ N int }
	balance     struct{}
	opened      struct{}
	deposited   struct{ N int }
)

func accountKind() *actors.Kind[account] {
	k := actors.NewKind("account", func(string) account { return account{} })
	actors.Handle(k, func(s account, _ openAccount) (actors.Decision, error) {
		if s.Open {
			return actors.Decision{}, actors.Reject("already open")
		}
		return actors.Decision{Events: []any{opened{}}}, nil
	})
	actors.Handle(k, func(s account, c deposit) (actors.Decision, error) {
		if !s.Open {
			return actors.Decision{}, actors.Reject("account is not open")
		}
		return actors.Decision{Events: []any{deposited{c.N}}, Reply: s.Balance + c.N}, nil
	})
	actors.Handle(k, func(s account, _ balance) (actors.Decision, error) { return actors.Decision{Reply: s}, nil })
	actors.On(k, func(s account, _ opened) account { s.Open = true; return s })
	actors.On(k, func(s account, e deposited) account { s.Balance += e.N; return s })
	return k
}

// An entity on the local copy over JetStream R3 whose append fails while
// its stream has no leader, and whose recovery after that fails too,
// answers its next command from what the log holds once the stream is
// back: never from the initial state. (With the copy wired, opened
// accounts in the cluster benchmark answered "not open" for good: a
// deposit's append met the stream's leader moving to its owner, so did
// the recovery after it, and the entity kept the reset state; ADR 0011,
// "Local copy".) Fails without the fix in actors (about 3.5 s), passes with
// it (about 4-5 s).
func TestEntityRecoversAfterAFailedAppendAndRecovery(t *testing.T) {
	c := bustest.Start(t, 3)
	nc := c.Connect(0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := open(t, nc, opts{prefix: "ent", partitions: 1, replicas: 3, dir: filepath.Join(t.TempDir(), "owned"), timeout: time.Second})
	if _, err := st.Acquire(ctx, 0, 1, "n1"); err != nil {
		t.Fatal(err)
	}
	n := actorstest.Start(t, actorstest.Config{Journal: st, Setup: func(rt *actors.Runtime) error { return rt.Register(accountKind()) }})
	const id = "tp-1"
	if _, err := n.Send(ctx, "account", id, openAccount{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Send(ctx, "account", id, deposit{1}); err != nil {
		t.Fatal(err)
	}

	// No quorum: wait until the stream's leader does not answer (bounded).
	c.Stop(1)
	c.Stop(2)
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, err := st.Inner().LoadSnapshot(ctx, "account/"+id); err != nil && !errors.Is(err, journal.ErrNotFound) {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the stream still answers 20 s after losing its quorum")
		}
	}
	// The append fails, and so does the recovery after it.
	if _, err := n.Send(ctx, "account", id, deposit{2}); err == nil {
		t.Fatal("a deposit succeeded without a quorum")
	}

	t0 := time.Now()
	c.Restart(1)
	c.Restart(2)
	t.Logf("restarted in %v", time.Since(t0))
	// Deposits until one succeeds (the stream elects a leader; the one
	// that failed may land when it does): none may be rejected.
	var bal int
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		out, err := n.Send(ctx, "account", id, deposit{4})
		var rej *actors.RejectedError
		if errors.As(err, &rej) {
			t.Fatalf("deposit after the stream came back: %v (the entity answered from a reset state)", err)
		}
		if err == nil {
			t.Logf("a deposit succeeded %v after the restart", time.Since(start))
			if err := json.Unmarshal(out.Reply, &bal); err != nil {
				t.Fatal(err)
			}
			break
		}
		t.Logf("deposit: %v", err)
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no deposit succeeded within 30 s of the restart: %v", err)
		}
	}
	// The balance is the log's: 1 + 4, and 2 if the failed deposit landed.
	want := 0
	for ev, err := range st.Inner().Read(ctx, "account/"+id, 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(ev.Type, "deposited") {
			var d deposited
			if err := json.Unmarshal(ev.Payload, &d); err != nil {
				t.Fatal(err)
			}
			want += d.N
		}
	}
	if bal != want || (bal != 5 && bal != 7) {
		t.Fatalf("balance %d after the deposits, the log's %d (want 5, or 7 if the failed deposit landed)", bal, want)
	}
}
