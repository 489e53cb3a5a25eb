package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a node in memory, for the handler's own logic; the real
// node is tested in cluster/node (dashboard_test.go) in a real browser.
type fakeSource struct {
	ov      Overview
	members []Member
	log     []journal.Event // the global log
	live    chan journal.Event

	mu    sync.Mutex
	tails []tailCall
}

type tailCall struct {
	kind       string
	from       uint64
	last       int
	stoppedCtx bool
}

func newFake() *fakeSource {
	f := &fakeSource{
		ov: Overview{
			Node: NodeInfo{Name: "node-7", Version: "v1.2.3", Started: time.Now().Add(-90 * time.Minute), DataDir: "/var/lib/troupe", Ready: true,
				Addresses: []Field{{"API", "http://127.0.0.1:8080"}}},
			Plugins: []Plugin{{Name: "validate-amount", Version: "9e063594f058aa", Kind: "sidecar", State: "ready", Calls: 12, Rejects: 2,
				MeanLatency: 700 * time.Microsecond, P99Latency: 10 * time.Millisecond}},
			Projections: []Projection{{Name: "balances", Position: 40, Head: 50}, {Name: "transfer-process", Position: 50, Head: 50, Reactor: true}},
			Kinds:       []Kind{{Name: "account", Commands: []string{"Deposit", "Open"}, Active: 2, ActiveIDs: []string{"acc-1", "<script>alert(1)</script>"}}},
			Totals:      Totals{Events: 50, Commands: []KindCount{{Kind: "account", OK: 10, Failed: 1}}},
		},
		members: []Member{{Name: "node-7", State: "alive", API: "http://127.0.0.1:8080", Self: true, Shards: 256}},
		live:    make(chan journal.Event, 100),
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	add := func(stream, typ, payload string) {
		seq := uint64(1)
		for _, ev := range f.log {
			if ev.Stream == stream {
				seq++
			}
		}
		f.log = append(f.log, journal.Event{Stream: stream, Sequence: seq, Position: uint64(len(f.log) + 1), Time: t0.Add(time.Duration(len(f.log)) * time.Second), Type: typ, Payload: []byte(payload)})
	}
	add("account/acc-1", "Opened", `{"owner":"ada"}`)
	add("account/acc-1", "Deposited", `{"amount":100}`)
	add("account/a/b", "Opened", `{"owner":"slash"}`)
	for i := range 250 {
		add("account/long", "Deposited", fmt.Sprintf(`{"amount":%d}`, i+1))
	}
	add("transfer/t1", "Started", `{"amount":5}`)
	return f
}

func (f *fakeSource) Overview(context.Context) (Overview, error) { return f.ov, nil }
func (f *fakeSource) Members(context.Context) ([]Member, error)  { return f.members, nil }

func (f *fakeSource) known(kind string) bool {
	for _, k := range f.ov.Kinds {
		if k.Name == kind {
			return true
		}
	}
	return false
}

func (f *fakeSource) Stream(_ context.Context, kind, id string, from uint64, limit int) ([]journal.Event, journal.StreamInfo, error) {
	if !f.known(kind) {
		return nil, journal.StreamInfo{}, ErrUnknownKind
	}
	stream := journal.StreamID(kind, id)
	var all []journal.Event
	for _, ev := range f.log {
		if ev.Stream == stream {
			all = append(all, ev)
		}
	}
	if len(all) == 0 {
		return nil, journal.StreamInfo{}, ErrUnknownEntity
	}
	info := journal.StreamInfo{Stream: stream, LastSequence: uint64(len(all)), Count: uint64(len(all)), First: all[0].Time, Last: all[len(all)-1].Time}
	if from == 0 {
		from = uint64(max(len(all)-limit+1, 1))
	}
	var out []journal.Event
	for _, ev := range all {
		if ev.Sequence >= from && len(out) < limit {
			out = append(out, ev)
		}
	}
	return out, info, nil
}

func (f *fakeSource) State(ctx context.Context, kind, id string) (json.RawMessage, uint64, error) {
	events, info, err := f.Stream(ctx, kind, id, 1, 1<<30)
	if err != nil {
		return nil, 0, err
	}
	return json.RawMessage(fmt.Sprintf(`{"events":%d}`, len(events))), info.LastSequence, nil
}

func (f *fakeSource) Tail(ctx context.Context, kind string, from uint64, last int, yield func(journal.Event) error) error {
	call := tailCall{kind: kind, from: from, last: last}
	defer func() {
		call.stoppedCtx = ctx.Err() != nil
		f.mu.Lock()
		f.tails = append(f.tails, call)
		f.mu.Unlock()
	}()
	if from == 0 {
		from = uint64(max(len(f.log)-last+1, 1))
	}
	for _, ev := range f.log {
		if ev.Position >= from && (kind == "" || strings.HasPrefix(ev.Stream, kind+"/")) {
			if err := yield(ev); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case ev := <-f.live:
			if err := yield(ev); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (f *fakeSource) tailCalls() []tailCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tailCall(nil), f.tails...)
}

// clusterSource adds the cluster's view to the fake.
type clusterSource struct{ *fakeSource }

func (c clusterSource) Shards(context.Context) ([]Shard, error) {
	var out []Shard
	for i := range 8 {
		out = append(out, Shard{ID: i, Owner: []string{"node-7", "node-8"}[i%2], Epoch: uint64(10 + i), State: "owned"})
	}
	return out, nil
}

func (c clusterSource) Leaders(context.Context) ([]Leader, error) {
	return []Leader{{Name: "timer-scheduler", Holder: "node-8", Epoch: 42, Expires: time.Now().Add(9 * time.Second)}}, nil
}

func newServer(t *testing.T, src Source, mod func(*Config)) *httptest.Server {
	t.Helper()
	cfg := Config{Source: src}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestRoutes(t *testing.T) {
	srv := newServer(t, newFake(), nil)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name     string
		path     string
		status   int
		ctype    string
		want     []string
		dontWant []string
		location string
	}{
		{name: "overview", path: "/ui/", status: 200, ctype: "text/html",
			want: []string{"<title>Overview · node-7 · Troupe</title>", "validate-amount", "9e063594f058<", "balances", "catching up",
				"transfer-process", "reactor", "v1.2.3", "1h 30m", "acc-1", `href="/ui/entity/account/acc-1"`, "Members", "this node",
				"A single node", "700.0µs", "10.0ms", `id="tail-form"`}},
		{name: "overview partial", path: "/ui/?partial=1", status: 200, ctype: "text/html",
			want: []string{`id="plugins"`, "validate-amount"}, dontWant: []string{"<html", "<header"}},
		{name: "entity ids are escaped", path: "/ui/", status: 200, ctype: "text/html",
			want: []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "/ui/entity/account/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"}, dontWant: []string{"<script>alert"}},
		{name: "entity", path: "/ui/entity/account/acc-1", status: 200, ctype: "text/html",
			want: []string{"<h1>account/acc-1</h1>", "Opened", "Deposited", `{&#34;amount&#34;:100}`, "As of sequence 2", `&#34;events&#34;: 2`,
				`{&#34;stream&#34;:&#34;account/acc-1&#34;,&#34;sequence&#34;:1,&#34;position&#34;:1,&#34;time&#34;:&#34;2026-01-02T03:04:05Z&#34;,&#34;type&#34;:&#34;Opened&#34;,&#34;payload&#34;:{&#34;owner&#34;:&#34;ada&#34;}}`,
				"troupe events replay --stream account/acc-1</code>", `data-live-from="3"`}},
		{name: "entity id with a slash", path: "/ui/entity/account/a%2Fb", status: 200, ctype: "text/html", want: []string{"<h1>account/a/b</h1>", "slash"}},
		{name: "latest page of a long stream", path: "/ui/entity/account/long", status: 200, ctype: "text/html",
			want: []string{"sequences 151–250 of 250", `href="/ui/entity/account/long?from=51"`, `href="/ui/entity/account/long?from=1"`, `data-seq="151"`, `data-seq="250"`,
				"--from 151</code>"},
			dontWant: []string{`data-seq="150"`, "newer ›"}},
		{name: "first page of a long stream", path: "/ui/entity/account/long?from=1&limit=10", status: 200, ctype: "text/html",
			want:     []string{"sequences 1–10 of 250", `href="/ui/entity/account/long?from=11&amp;limit=10"`, `data-seq="10"`, "--limit 10</code>"},
			dontWant: []string{`data-seq="11"`, "‹ older"}},
		{name: "unknown kind", path: "/ui/entity/ghost/x", status: 404, ctype: "text/html",
			want: []string{"Unknown entity kind", `This node has no entity kind &#34;ghost&#34;.`, "<code>account</code>"}},
		{name: "unknown entity", path: "/ui/entity/account/nobody", status: 404, ctype: "text/html",
			want: []string{"No such entity", "account/nobody has no events"}},
		{name: "bad page size", path: "/ui/entity/account/acc-1?limit=0", status: 400, ctype: "text/html", want: []string{"limit &#34;0&#34;"}},
		{name: "entity path without an id", path: "/ui/entity/account/", status: 400, ctype: "text/html", want: []string{"empty id"}},
		{name: "unknown page", path: "/ui/nothing/here", status: 404, ctype: "text/html", want: []string{"Page not found", "/ui/nothing/here"}},
		{name: "lookup", path: "/ui/entity?kind=account&id=a/b", status: 303, location: "/ui/entity/account/a%2Fb"},
		{name: "lookup without an id", path: "/ui/entity?kind=account", status: 400, ctype: "text/html", want: []string{"Which entity?"}},
		{name: "script", path: "/ui/static/app.js", status: 200, ctype: "text/javascript", want: []string{"EventSource"}},
		{name: "style sheet", path: "/ui/static/style.css", status: 200, ctype: "text/css", want: []string{"prefers-color-scheme"}},
		{name: "unknown asset", path: "/ui/static/nope.js", status: 404, ctype: "text/html"},
		{name: "overview JSON", path: "/ui/api/overview", status: 200, ctype: "application/json",
			want: []string{`"name":"node-7"`, `"plugins":[{"name":"validate-amount"`, `"members":[`, `"rates":{`}},
		{name: "entity JSON", path: "/ui/api/entity/account/acc-1", status: 200, ctype: "application/json",
			want: []string{`"stream":"account/acc-1"`, `"sequence":2`, `"state":{"events":2}`, `"type":"Deposited"`}},
		{name: "unknown kind JSON", path: "/ui/api/entity/ghost/x", status: 404, ctype: "application/json", want: []string{`{"error":"unknown entity kind \"ghost\""}`}},
		{name: "unknown entity JSON", path: "/ui/api/entity/account/nobody", status: 404, ctype: "application/json", want: []string{`"no entity account/nobody"`}},
		{name: "bad tail", path: "/ui/api/tail?kind=a/b", status: 400, ctype: "application/json", want: []string{"not an entity kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, noRedirect, srv.URL+tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("GET %s: %d, want %d\n%s", tt.path, resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tt.ctype)
			}
			if tt.location != "" && resp.Header.Get("Location") != tt.location {
				t.Errorf("Location %q, want %q", resp.Header.Get("Location"), tt.location)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s lacks %q:\n%s", tt.path, w, body)
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(body, w) {
					t.Errorf("GET %s has %q", tt.path, w)
				}
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
		})
	}
}

func TestOnlyReads(t *testing.T) {
	srv := newServer(t, newFake(), nil)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(method, srv.URL+"/ui/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d, Allow %q", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

func TestStaticCaching(t *testing.T) {
	srv := newServer(t, newFake(), nil)
	_, page := get(t, http.DefaultClient, srv.URL+"/ui/")
	i := strings.Index(page, "/ui/static/app.js?v=")
	if i < 0 {
		t.Fatalf("the page does not load a versioned script:\n%s", page)
	}
	url := page[i : i+strings.IndexByte(page[i:], '"')]
	resp, _ := get(t, http.DefaultClient, srv.URL+url)
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Fatalf("Cache-Control %q for a versioned asset", cc)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+url, nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET: %d", resp2.StatusCode)
	}
}

func TestClusterPanel(t *testing.T) {
	srv := newServer(t, clusterSource{newFake()}, nil)
	_, body := get(t, http.DefaultClient, srv.URL+"/ui/")
	for _, w := range []string{"Shard owners", `class="cell o1" title="shard 1: node-8 (owned), epoch 11"`, "timer-scheduler", "Leaders"} {
		if !strings.Contains(body, w) {
			t.Errorf("cluster panel lacks %q", w)
		}
	}
	if strings.Contains(body, "A single node") {
		t.Error("a clustered node is described as single")
	}
}

// sse reads Server-Sent Events from a live tail.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

type message struct{ id, event, data string }

func openTail(t *testing.T, ctx context.Context, url string, header http.Header) *sse {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("tail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next message (comments skipped), or fails after bound.
func (s *sse) next(t *testing.T, bound time.Duration) message {
	t.Helper()
	type result struct {
		m   message
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var m message
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				ch <- result{err: err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if m.data != "" {
					ch <- result{m: m}
					return
				}
			case strings.HasPrefix(line, "id: "):
				m.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				m.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				m.data = line[6:]
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("tail ended: %v", r.err)
		}
		return r.m
	case <-time.After(bound):
		s.resp.Body.Close() // ends the reader
		<-ch
		t.Fatalf("no tail message within %s", bound)
	}
	return message{}
}

func TestTail(t *testing.T) {
	type want struct{ id, stream string }
	tests := []struct {
		name     string
		query    string
		lastID   string
		wantCall tailCall
		want     []want
	}{
		{name: "backlog of all kinds", query: "last=2", wantCall: tailCall{last: 2},
			want: []want{{"253", "account/long"}, {"254", "transfer/t1"}}},
		{name: "one kind", query: "kind=account&last=2", wantCall: tailCall{kind: "account", last: 2},
			want: []want{{"253", "account/long"}}},
		{name: "one entity", query: "kind=account&id=acc-1&from=1", wantCall: tailCall{kind: "account", from: 1, last: 50},
			want: []want{{"1", "account/acc-1"}, {"2", "account/acc-1"}}},
		{name: "an id prefix", query: "id=a*&from=1", wantCall: tailCall{from: 1, last: 50},
			want: []want{{"1", "account/acc-1"}, {"2", "account/acc-1"}, {"3", "account/a/b"}}},
		{name: "an exact id with a star", query: "id=a*&exact=1&from=1", wantCall: tailCall{from: 1, last: 50}},
		{name: "resumes after Last-Event-ID", query: "kind=account&id=acc-1", lastID: "1", wantCall: tailCall{kind: "account", from: 2, last: 50},
			want: []want{{"2", "account/acc-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFake()
			srv := newServer(t, src, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := http.Header{}
			if tt.lastID != "" {
				h.Set("Last-Event-ID", tt.lastID)
			}
			s := openTail(t, ctx, srv.URL+"/ui/api/tail?"+tt.query, h)
			for _, w := range tt.want {
				m := s.next(t, 5*time.Second)
				var ev EventJSON
				if err := json.Unmarshal([]byte(m.data), &ev); err != nil {
					t.Fatalf("data %q: %v", m.data, err)
				}
				if m.id != w.id || ev.Stream != w.stream || fmt.Sprint(ev.Position) != m.id {
					t.Fatalf("message %+v, want id %s of %s", m, w.id, w.stream)
				}
			}
			// Then a new event, the live part: it passes the filter or not.
			src.live <- journal.Event{Stream: "zzz/other", Sequence: 1, Position: 900, Type: "Nope"}
			src.live <- journal.Event{Stream: "account/acc-1", Sequence: 3, Position: 901, Type: "Withdrawn", Payload: []byte("{\n\"amount\": 1}")}
			if tt.name != "an exact id with a star" && tt.name != "backlog of all kinds" && tt.name != "an id prefix" {
				m := s.next(t, 5*time.Second)
				if m.id != "901" || !strings.Contains(m.data, `"payload":{"amount":1}`) {
					t.Fatalf("live message %+v", m)
				}
			}
			cancel()
			waitFor(t, func() bool { return len(src.tailCalls()) == 1 })
			got := src.tailCalls()[0]
			tt.wantCall.stoppedCtx = true
			if got != tt.wantCall {
				t.Fatalf("Source.Tail called with %+v, want %+v", got, tt.wantCall)
			}
		})
	}
}

func TestTailRateCap(t *testing.T) {
	src := newFake()
	srv := newServer(t, src, func(c *Config) { c.TailMaxRate = 3 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTail(t, ctx, srv.URL+"/ui/api/tail?last=10", nil)
	for i := range 3 {
		if m := s.next(t, 5*time.Second); m.event != "" || m.id != fmt.Sprint(245+i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	m := s.next(t, 5*time.Second)
	if m.event != "skipped" || m.data != `{"skipped":7,"max_rate":3}` {
		t.Fatalf("after the cap: %+v", m)
	}
}

func TestTailHeartbeat(t *testing.T) {
	srv := newServer(t, newFake(), func(c *Config) { c.Heartbeat = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTail(t, ctx, srv.URL+"/ui/api/tail?last=0", nil)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keep-alive\n" {
			return
		}
	}
	t.Fatal("no heartbeat within 5s")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tot := func(events, ok, failed uint64) Totals {
		return Totals{Events: events, Commands: []KindCount{{Kind: "account", OK: ok, Failed: failed}}}
	}
	type obs struct {
		at time.Duration
		t  Totals
	}
	tests := []struct {
		name       string
		obs        []obs
		wantWindow time.Duration
		wantEvents float64
		wantCmds   float64
		wantFailed float64
		wantSeries int
	}{
		{name: "one sample measures nothing", obs: []obs{{0, tot(10, 5, 0)}}},
		{name: "too close together", obs: []obs{{0, tot(10, 5, 0)}, {200 * time.Millisecond, tot(20, 5, 0)}}},
		{name: "two seconds", obs: []obs{{0, tot(10, 5, 1)}, {2 * time.Second, tot(30, 13, 3)}},
			wantWindow: 2 * time.Second, wantEvents: 10, wantCmds: 5, wantFailed: 1, wantSeries: 1},
		{name: "window drops old samples", obs: []obs{{0, tot(0, 0, 0)}, {5 * time.Second, tot(1000, 0, 0)}, {14 * time.Second, tot(1900, 0, 0)}},
			wantWindow: 9 * time.Second, wantEvents: 100, wantSeries: 2},
		{name: "a long gap restarts the series", obs: []obs{{0, tot(0, 0, 0)}, {2 * time.Second, tot(10, 0, 0)}, {60 * time.Second, tot(20, 0, 0)}, {62 * time.Second, tot(40, 0, 0)}},
			wantWindow: 2 * time.Second, wantEvents: 10, wantSeries: 1},
		{name: "a counter going down counts as no change", obs: []obs{{0, tot(100, 50, 0)}, {2 * time.Second, tot(10, 5, 0)}},
			wantWindow: 2 * time.Second, wantSeries: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler()
			var r Rates
			for _, o := range tt.obs {
				r = s.observe(t0.Add(o.at), o.t)
			}
			if r.Window != tt.wantWindow || r.Events != tt.wantEvents || r.Commands != tt.wantCmds || r.FailedCommands != tt.wantFailed || len(r.EventSeries) != tt.wantSeries {
				t.Fatalf("rates %+v", r)
			}
			if len(r.ByKind) != 1 || r.ByKind[0].Kind != "account" || r.ByKind[0].Commands != tt.wantCmds {
				t.Fatalf("by kind %+v", r.ByKind)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no source", Config{}, "Source is required"},
		{"bad prefix", Config{Source: newFake(), Prefix: "ui"}, "prefix"},
		{"fast refresh", Config{Source: newFake(), Refresh: time.Millisecond}, "refresh"},
		{"huge backlog", Config{Source: newFake(), TailBacklog: 5000}, "backlog"},
		{"fast heartbeat", Config{Source: newFake(), Heartbeat: time.Millisecond}, "heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{formatRate(0), "0"},
		{formatRate(2.25), "2.2"},
		{formatRate(1234.4), "1234"},
		{formatRate(23456), "23.5k"},
		{formatLatency(0), "–"},
		{formatLatency(64400 * time.Nanosecond), "64.4µs"},
		{formatLatency(10 * time.Millisecond), "10.0ms"},
		{formatUptime(90 * time.Minute), "1h 30m"},
		{formatUptime(50 * time.Hour), "2d 2h"},
		{formatUptime(61 * time.Second), "1m 1s"},
		{string(PayloadJSON([]byte(`{"a":1}`))), `{"a":1}`},
		{string(PayloadJSON([]byte("plain"))), `"plain"`},
		{string(PayloadJSON([]byte{0xff, 0})), `"/wA="`},
		{shellQuote("account/acc-1"), "account/acc-1"},
		{shellQuote("account/it's"), `'account/it'\''s'`},
		{formatMeta(map[string]string{"b": "2", "a": "1"}), "a=1 b=2"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if s := newSpark([]float64{0, 10, 5}); s.Path != "M0.0 39.0 L120.0 1.0 L240.0 20.0" || s.Max != 10 || s.Last != 5 {
		t.Errorf("spark %+v", s)
	}
}
