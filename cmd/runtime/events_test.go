package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/node/dashboard"
	"github.com/troupe-dev/troupe/journal"
)

// decodeLines decodes `troupe events` JSON lines.
func decodeLines(t *testing.T, out string) []dashboard.EventJSON {
	t.Helper()
	var evs []dashboard.EventJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e dashboard.EventJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func TestEventsReplayTailAndStats(t *testing.T) {
	data := t.TempDir()
	p := startNode(t, data)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{"owner":"ada"}}`)
	send(t, p.url, `{"kind":"account","id":"acc-2","type":"Open","payload":{"owner":"bob"}}`)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":100}}`)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":30}}`)

	want := []struct {
		seq, pos uint64
		typ      string
		payload  string
	}{
		{1, 1, "Opened", `{"owner":"ada"}`},
		{2, 3, "Deposited", `{"amount":100}`},
		{3, 4, "Withdrawn", `{"amount":30}`},
	}
	check := func(where, out string) {
		t.Helper()
		evs := decodeLines(t, out)
		if len(evs) != len(want) {
			t.Fatalf("%s: %d events, want %d:\n%s", where, len(evs), len(want), out)
		}
		for i, w := range want {
			e := evs[i]
			if e.Stream != "account/acc-1" || e.Sequence != w.seq || e.Position != w.pos || e.Type != w.typ || string(e.Payload) != w.payload {
				t.Fatalf("%s: event %d = %+v (payload %s), want %+v", where, i, e, e.Payload, w)
			}
		}
	}

	out, stderr, code := cli(t, p.url, "events", "replay", "--stream", "account/acc-1")
	if code != 0 {
		t.Fatalf("replay: %d %s", code, stderr)
	}
	check("replay via API", out)
	out, _, _ = cli(t, p.url, "events", "replay", "--stream", "account/acc-1", "--from", "2", "--format", "table")
	if lines := strings.Split(out, "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "POSITION") || !strings.Contains(lines[1], "Deposited") || !strings.Contains(lines[2], "Withdrawn") {
		t.Fatalf("replay --from 2 --format table:\n%s", out)
	}
	out, _, _ = cli(t, p.url, "events", "stats")
	if !strings.Contains(out, "streams        2") || !strings.Contains(out, "events         4") || !strings.Contains(out, "last position  4") {
		t.Fatalf("stats:\n%s", out)
	}
	out, _, _ = cli(t, p.url, "events", "tail", "--from", "1", "--no-follow", "--kind", "account")
	if evs := decodeLines(t, out); len(evs) != 4 || evs[1].Stream != "account/acc-2" {
		t.Fatalf("tail --from 1:\n%s", out)
	}

	// A followed tail sees a new event as it is committed.
	tailOut, tailErr := &syncBuffer{mu: make(chan struct{}, 1)}, &syncBuffer{mu: make(chan struct{}, 1)}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"events", "tail", "--last", "1", "--timeout", "20s", "--node", p.url}, tailOut, tailErr)
	}()
	// Wait until the tail has printed the last committed event, so the next
	// one can only reach it by following.
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(tailOut.String(), `"position":4`) })
	send(t, p.url, `{"kind":"account","id":"acc-2","type":"Deposit","payload":{"amount":7}}`)
	// Stopping the node ends the followed stream.
	p.stop(10 * time.Second)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("followed tail did not end when the node stopped")
	}
	evs := decodeLines(t, tailOut.String())
	if len(evs) < 2 || evs[len(evs)-1].Position != 5 || evs[len(evs)-1].Type != "Deposited" {
		t.Fatalf("followed tail printed:\n%s\nstderr: %s", tailOut.String(), tailErr.String())
	}

	// A stopped node's data directory, opened read-only, says the same.
	out, stderr, code = cli(t, "", "events", "replay", "--stream", "account/acc-1", "--data-dir", data)
	if code != 0 {
		t.Fatalf("replay --data-dir: %d %s", code, stderr)
	}
	check("replay from the data dir", out)
	out, _, _ = cli(t, "", "events", "stats", "--data-dir", data)
	if !strings.Contains(out, "events         5") {
		t.Fatalf("stats --data-dir:\n%s", out)
	}

	// A stream that does not exist is an error, not an empty success.
	_, stderr, code = cli(t, "", "events", "replay", "--stream", "account/acc-nope", "--data-dir", data)
	if code == 0 || !strings.Contains(stderr, "stream account/acc-nope does not exist") {
		t.Fatalf("replay of a missing stream: %d %q", code, stderr)
	}
	_, stderr, code = cli(t, "", "events", "replay", "--stream", "account/acc-1", "--from", "99", "--data-dir", data)
	if code == 0 || !strings.Contains(stderr, "no events at or after sequence 99") {
		t.Fatalf("replay past the end of a stream: %d %q", code, stderr)
	}
	// Every row of a table is aligned with the header, whatever the widths.
	out, _, _ = cli(t, "", "events", "tail", "--from", "1", "--no-follow", "--format", "table", "--data-dir", data)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 6 {
		t.Fatalf("tail --format table: want a header and 5 rows:\n%s", out)
	}
	checkAligned(t, out)

	// Bad input: a malformed stream id.
	_, stderr, code = cli(t, "", "events", "replay", "--stream", "nokind", "--data-dir", data)
	if code == 0 || !strings.Contains(stderr, "not <kind>/<id>") {
		t.Fatalf("replay of a bad stream id: %d %q", code, stderr)
	}
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The CLI reads the data of a node that was killed (no clean shutdown).
func TestEventsReplayAfterKill(t *testing.T) {
	data := t.TempDir()
	p := startNode(t, data)
	send(t, p.url, `{"kind":"account","id":"acc-k","type":"Open","payload":{"owner":"k"}}`)
	send(t, p.url, `{"kind":"account","id":"acc-k","type":"Deposit","payload":{"amount":9}}`)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	out, stderr, code := cli(t, "", "events", "replay", "--stream", "account/acc-k", "--data-dir", data)
	evs := decodeLines(t, out)
	if code != 0 || len(evs) != 2 || evs[1].Type != "Deposited" || string(evs[1].Payload) != `{"amount":9}` {
		t.Fatalf("replay of a killed node's data: %d\n%s\n%s", code, out, stderr)
	}
}

// checkAligned fails unless every row of a table starts each column where
// the header does.
func checkAligned(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, col := range []string{"STREAM", "SEQ", "TIME", "TYPE", "PAYLOAD"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if len(l) <= at || l[at-1] != ' ' || l[at] == ' ' {
				t.Fatalf("column %s (at %d) is not aligned in row %q:\n%s", col, at, l, out)
			}
		}
	}
}

// A replay's table is aligned even when a later row is wider than the
// first ones (a short event type, then a long one).
func TestReplayTableAlignsLaterWideRows(t *testing.T) {
	var b strings.Builder
	p, err := newPrinter(&b, "table")
	if err != nil {
		t.Fatal(err)
	}
	p.hold = true
	at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	for i, typ := range []string{"Placed", "$TimerScheduled", "AVeryLongEventTypeIndeed"} {
		p.print(journal.Event{Stream: "order/o-1", Sequence: uint64(i + 1), Position: uint64(i + 1), Time: at, Type: typ, Payload: []byte(`{}`)})
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "\n"); n != 4 {
		t.Fatalf("%d lines, want a header and 3 rows:\n%s", n, b.String())
	}
	checkAligned(t, b.String())
}
