package membership

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for valid
	}{
		{"minimal", Config{NodeID: "n1"}, ""},
		{"no id", Config{}, "NodeID is required"},
		{"bad id", Config{NodeID: "a b"}, "node id"},
		{"id starts with a dot", Config{NodeID: ".a"}, "node id"},
		{"id too long", Config{NodeID: strings.Repeat("a", 129)}, "node id"},
		{"id at the limit", Config{NodeID: strings.Repeat("a", 128)}, ""},
		{"bind without port", Config{NodeID: "n", BindAddr: "127.0.0.1"}, "BindAddr"},
		{"bind without host", Config{NodeID: "n", BindAddr: ":7946"}, "host is empty"},
		{"bind port 0", Config{NodeID: "n", BindAddr: "127.0.0.1:0"}, ""},
		{"advertise port 0", Config{NodeID: "n", AdvertiseAddr: "10.0.0.1:0"}, "port 0"},
		{"advertise bad port", Config{NodeID: "n", AdvertiseAddr: "10.0.0.1:99999"}, "bad port"},
		{"key 16", Config{NodeID: "n", Key: make([]byte, 16)}, ""},
		{"key 24", Config{NodeID: "n", Key: make([]byte, 24)}, ""},
		{"key 32", Config{NodeID: "n", Key: make([]byte, 32)}, ""},
		{"key 20", Config{NodeID: "n", Key: make([]byte, 20)}, "16, 24 or 32"},
		{"tags too big", Config{NodeID: "n", Tags: map[string]string{"x": strings.Repeat("v", 600)}}, "over serf's limit"},
		{"negative reap", Config{NodeID: "n", ReapFailedAfter: -time.Second}, "must not be negative"},
		{"retransmit 2", Config{NodeID: "n", Timers: Timers{RetransmitMult: 2}}, "RetransmitMult 2"},
		{"probe timeout above interval", Config{NodeID: "n", Timers: Timers{ProbeInterval: time.Second, ProbeTimeout: 2 * time.Second}}, "below ProbeInterval"},
		{"negative gossip interval", Config{NodeID: "n", Timers: Timers{GossipInterval: -1}}, "negative"},
		{"LAN timers", Config{NodeID: "n", Timers: LANTimers()}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v; want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Config{NodeID: "n", Timers: Timers{ProbeInterval: time.Second, ProbeTimeout: 300 * time.Millisecond}}.withDefaults()
	if c.BindAddr != DefaultBindAddr || c.ReapFailedAfter != DefaultReapFailedAfter || c.ReapLeftAfter != DefaultReapLeftAfter {
		t.Errorf("defaults: %+v", c)
	}
	want := TunedTimers()
	want.ProbeInterval, want.ProbeTimeout = time.Second, 300*time.Millisecond
	if c.Timers != want {
		t.Errorf("timers: got %+v, want %+v (set fields kept, zero ones tuned)", c.Timers, want)
	}
	if (Timers{}).withDefaults() != TunedTimers() {
		t.Error("zero Timers are not the tuned timers")
	}
	tags := map[string]string{"a": "1"}
	c = Config{NodeID: "n", Tags: tags}.withDefaults()
	tags["a"] = "2"
	if c.Tags["a"] != "1" {
		t.Error("Config keeps the caller's tag map")
	}
}

// TagsSize must agree with serf's own check to the byte: serf.Create
// accepts tags of MaxTagsSize bytes and refuses one byte more.
func TestTagsSizeMatchesSerf(t *testing.T) {
	leakCheck(t)
	tagsOfSize := func(size int) map[string]string {
		tags := map[string]string{"api": "http://10.0.0.1:8080", "v": ""}
		for TagsSize(tags) < size {
			tags["v"] += "x"
		}
		if TagsSize(tags) != size {
			t.Fatalf("cannot make tags of %d bytes", size)
		}
		return tags
	}
	for _, tt := range []struct {
		size int
		ok   bool
	}{{MaxTagsSize - 1, true}, {MaxTagsSize, true}, {MaxTagsSize + 1, false}, {MaxTagsSize + 200, false}} {
		tags := tagsOfSize(tt.size)

		_, ourErr := New(Config{NodeID: "n", Tags: tags})
		var tl *TagsTooLargeError
		if tt.ok != (ourErr == nil) || (!tt.ok && !errors.As(ourErr, &tl)) {
			t.Errorf("%d bytes: New: %v", tt.size, ourErr)
		}

		sc := serf.DefaultConfig()
		sc.NodeName = "n"
		sc.Tags = tags
		sc.MemberlistConfig.BindAddr, sc.MemberlistConfig.BindPort = "127.0.0.1", 0
		sc.LogOutput, sc.MemberlistConfig.LogOutput = io.Discard, io.Discard
		s, serfErr := serf.Create(sc)
		if serfErr == nil {
			if err := s.Shutdown(); err != nil {
				t.Fatal(err)
			}
		}
		if tt.ok != (serfErr == nil) {
			t.Errorf("%d bytes: serf.Create: %v; our check says ok=%v", tt.size, serfErr, tt.ok)
		}
	}
}

// The tags Troupe will announce fit with room to spare; an oversized
// SetTags is refused with a clear error and changes nothing.
func TestTagsLimit(t *testing.T) {
	leakCheck(t)
	realistic := map[string]string{
		"id":      "node-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc",
		"cluster": "prod-eu-west-1-1f2e3d4c",
		"api":     "http://10.123.45.67:8080",
		"nats":    "nats://10.123.45.67:4222",
		"route":   "nats-route://10.123.45.67:6222",
		"roles":   "api,worker,projections,singletons",
		"version": "v0.12.3-rc.1+abcdef0",
		"shards":  "256",
		"started": "2026-01-02T15:04:05Z",
	}
	size := TagsSize(realistic)
	t.Logf("realistic tags: %d of %d bytes", size, MaxTagsSize)
	if err := checkTags(realistic); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, Config{NodeID: "n", Tags: realistic})
	big := map[string]string{"a": strings.Repeat("x", 300), "b": strings.Repeat("y", 300)}
	err := n.SetTags(big)
	var tl *TagsTooLargeError
	if !errors.As(err, &tl) || tl.Limit != MaxTagsSize || tl.Size != TagsSize(big) {
		t.Fatalf("SetTags(big): %v", err)
	}
	if !strings.Contains(err.Error(), "limit of 512") || !strings.Contains(err.Error(), "a (301 bytes)") {
		t.Errorf("message: %v", err)
	}
	if got := n.Local().Tags; got["id"] != realistic["id"] || len(got) != len(realistic) {
		t.Errorf("tags changed by a refused SetTags: %v", got)
	}
}

func TestSuspectedID(t *testing.T) {
	for _, tt := range []struct {
		msg, id string
		ok      bool
	}{
		{"memberlist: Suspect node-2 has failed, no acks received", "node-2", true},
		{"memberlist: Suspect  has failed, no acks received", "", false},
		{"memberlist: Marking node-2 as failed, suspect timeout reached (0 peer confirmations)", "", false},
		{"memberlist: Suspect node-2 has failed", "", false},
	} {
		id, ok := suspectedID(tt.msg)
		if id != tt.id || ok != tt.ok {
			t.Errorf("suspectedID(%q) = %q, %v", tt.msg, id, ok)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", slog.LevelDebug, "memberlist: Stream connection from=127.0.0.1:1"},
		{"[INFO] serf: EventMemberJoin: a 127.0.0.1\n", slog.LevelInfo, "serf: EventMemberJoin: a 127.0.0.1"},
		{"[WARN] memberlist: Refuting a suspect message (from: b)\n", slog.LevelWarn, "memberlist: Refuting a suspect message (from: b)"},
		{"[ERR] memberlist: Failed push/pull merge: x\n", slog.LevelError, "memberlist: Failed push/pull merge: x"},
		{"[ERROR] x\n", slog.LevelError, "x"},
		{"[TRACE] x", slog.LevelDebug, "x"},
		{"Err: Could not set the deadline: x\n", slog.LevelError, "Err: Could not set the deadline: x"},
		{"plain line\n", slog.LevelInfo, "plain line"},
		{"[odd] x", slog.LevelInfo, "[odd] x"},
		{"[unterminated", slog.LevelInfo, "[unterminated"},
	}
	for _, tt := range tests {
		level, msg := parseLogLine(tt.line)
		if level != tt.level || msg != tt.msg {
			t.Errorf("parseLogLine(%q) = %v %q; want %v %q", tt.line, level, msg, tt.level, tt.msg)
		}
	}
}

// withStderrCaptured runs fn with os.Stderr redirected to a pipe and fails
// the test if anything was written to it.
func withStderrCaptured(t *testing.T, fn func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stderr
	os.Stderr = w
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	defer func() {
		os.Stderr = orig
		_ = w.Close()
		if s := <-got; s != "" {
			t.Errorf("written to stderr:\n%s", s)
		}
		_ = r.Close()
	}()
	fn()
}
