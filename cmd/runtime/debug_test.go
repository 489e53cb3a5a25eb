package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestDebugAddrServesTheProfilerOnLoopbackOnly(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:6060", ":6060", "nohost"} {
		if _, stop, err := serveDebug(addr, log); err == nil {
			stop()
			t.Errorf("serveDebug(%q) = nil error, want a refusal", addr)
		} else if !strings.Contains(err.Error(), "--debug-addr") {
			t.Errorf("serveDebug(%q) = %v, want it to name --debug-addr", addr, err)
		}
	}
	addr, stop, err := serveDebug("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile:") {
		t.Fatalf("%d %.200s", resp.StatusCode, b)
	}
}
