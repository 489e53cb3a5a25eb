package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// SIGTERM while commands flow: the node stops within the bound, and every
// command it acknowledged is there after a restart.
func TestSIGTERMUnderLoadLosesNothingAcknowledged(t *testing.T) {
	stopUnderLoad(t, syscall.SIGTERM)
}

// kill -9 while commands flow (sync policy always): every command the node
// acknowledged is there after a restart.
func TestSIGKILLUnderLoadLosesNothingAcknowledged(t *testing.T) {
	for range 3 {
		stopUnderLoad(t, syscall.SIGKILL)
	}
}

func stopUnderLoad(t *testing.T, sig syscall.Signal) {
	data := t.TempDir()
	if sig == syscall.SIGTERM {
		// The events publisher lags behind the commands (an injected
		// fault: 1 ms per event), so that at SIGTERM many acknowledged
		// events are not published yet and the stop must drain them.
		t.Setenv("TROUPE_TEST_PUBLISH_DELAY", "1ms")
	}
	p := startNode(t, data)
	const workers = 8
	for w := range workers {
		send(t, p.url, fmt.Sprintf(`{"kind":"account","id":"w%d","type":"Open","payload":{}}`, w))
	}
	// Every committed event reaches NATS before a graceful stop ends: a
	// subscriber records the stream sequences it receives.
	var (
		msgs      chan *nats.Msg
		published = map[string]map[uint64]bool{}
	)
	if sig == syscall.SIGTERM {
		nc, err := nats.Connect(p.nats, nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		// A channel subscription: nats.go hands each message to the
		// channel as it reads it, and keeps it there when the server
		// closes the connection (an async subscription's queue would be
		// dropped on close).
		msgs = make(chan *nats.Msg, 1<<16)
		if _, err := nc.ChanSubscribe("troupe.events.account.>", msgs); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	acked := make([]atomic.Int64, workers) // read while the workers run
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := client.Post(p.url+"/troupe.v1.CommandService/Send", "application/json",
					strings.NewReader(fmt.Sprintf(`{"kind":"account","id":"w%d","type":"Deposit","payload":{"amount":1}}`, w)))
				if err != nil {
					return // the node has gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					acked[w].Add(1)
				case 503:
					if sig == syscall.SIGKILL {
						t.Errorf("worker %d: 503 before the kill", w)
					}
					return // shutting down: a clear, retryable refusal
				default:
					t.Errorf("worker %d: status %d", w, resp.StatusCode)
					return
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, func() bool {
		total := int64(0)
		for i := range acked {
			if acked[i].Load() < 5 {
				return false
			}
			total += acked[i].Load()
		}
		return total >= 300
	})
	atSignal := len(msgs) // received so far (a nil channel: 0)
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after %v\n%s", sig, p.logs)
	}
	took := time.Since(start)
	wg.Wait()
	afterSignal := len(msgs) - atSignal
	if sig == syscall.SIGTERM {
		// Open is sequence 1 (sent before the subscription); the
		// acknowledged deposits are 2..1+acked.
		// The node has exited: every message the subscriber received is
		// in the channel.
		for len(msgs) > 0 {
			m := <-msgs
			seq, _ := strconv.ParseUint(m.Header.Get("Troupe-Sequence"), 10, 64)
			st := m.Header.Get("Troupe-Stream")
			if published[st] == nil {
				published[st] = map[uint64]bool{}
			}
			published[st][seq] = true
		}
		for w := range workers {
			st := fmt.Sprintf("account/w%d", w)
			for seq := uint64(2); seq <= 1+uint64(acked[w].Load()); seq++ {
				if !published[st][seq] {
					t.Fatalf("%s: event %d of an acknowledged command was not published before the node exited (%d acknowledged, %d published)\n%s",
						st, seq, acked[w].Load(), len(published[st]), p.logs)
				}
			}
		}
	}

	p = startNode(t, data)
	// Read the balances once the read model has caught up with the log.
	stats, _, _ := cli(t, p.url, "events", "stats")
	var head string
	for _, line := range strings.Split(stats, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "last" {
			head = f[2]
		}
	}
	for w := range workers {
		stdout, stderr, rc := cli(t, p.url, "query", "account", fmt.Sprintf(`{"id":"w%d"}`, w), "--min-position", head)
		if rc != 0 {
			t.Fatalf("query: %s", stderr)
		}
		var got int
		if _, err := fmt.Sscanf(stdout[strings.Index(stdout, `"balance":`)+len(`"balance":`):], "%d", &got); err != nil {
			t.Fatalf("balance of w%d in %q: %v", w, stdout, err)
		}
		if n := acked[w].Load(); int64(got) < n {
			t.Fatalf("w%d: %d deposits acknowledged, balance %d after restart", w, n, got)
		}
	}
	counts := make([]int64, workers)
	for i := range acked {
		counts[i] = acked[i].Load()
	}
	t.Logf("%v: stopped in %s under load; acknowledged %v; %d of them published after the signal", sig, took, counts, afterSignal)
	p.stop(10 * time.Second)
}
