package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestProjectionsStatusAndRebuild(t *testing.T) {
	p := startNode(t, t.TempDir())
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{}}`)
	for i := 1; i <= 50; i++ {
		send(t, p.url, fmt.Sprintf(`{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":%d}}`, i))
	}
	// 51 events; the balances projection reaches the head.
	waitFor(t, 10*time.Second, func() bool {
		out, _, _ := cli(t, p.url, "projections", "status")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 6 && f[0] == "balances" && f[2] == "51" && f[3] == "51" && f[4] == "0" && f[5] == "ok" {
				return true
			}
		}
		return false
	})

	out, stderr, code := cli(t, p.url, "projections", "rebuild", "balances")
	if code != 0 || !strings.HasPrefix(out, "rebuilt balances: 51 positions") || !strings.Contains(stderr, "100%  51/51") {
		t.Fatalf("rebuild: %d\nstdout %q\nstderr %q", code, out, stderr)
	}
	out, _, code = cli(t, p.url, "query", "balance", `{"id":"acc-1"}`)
	if code != 0 || out != "1275" {
		t.Fatalf("balance after rebuild: %d %q", code, out)
	}

	_, stderr, code = cli(t, p.url, "projections", "rebuild", "$events-publisher")
	if code == 0 || !strings.Contains(stderr, "writes outside the read store") {
		t.Fatalf("rebuild of the events publisher: %d %q", code, stderr)
	}
	_, stderr, code = cli(t, p.url, "projections", "rebuild", "transfer-process")
	if code == 0 || !strings.Contains(stderr, "is a reactor") {
		t.Fatalf("rebuild of a reactor: %d %q", code, stderr)
	}
	_, stderr, code = cli(t, p.url, "projections", "rebuild", "nope")
	if code == 0 || !strings.Contains(stderr, `not_found: unknown projection "nope"`) {
		t.Fatalf("rebuild of an unknown projection: %d %q", code, stderr)
	}

	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`troupe_projection_position{partition="0",projection="balances"} 51`, `troupe_projection_lag_events{partition="0",projection="balances"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	p.stop(10 * time.Second)
}
