package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// troupe bench against a real node (the binary, as a child process).
func TestBenchAgainstANode(t *testing.T) {
	p := startNode(t, t.TempDir())
	mix := "deposit=40,withdraw=10,transfer=10,balance=20,account=10,statement=10"

	t.Run("bounded by count", func(t *testing.T) {
		stdout, stderr, code := cli(t, p.url, "bench", "--count", "400", "--duration", "1m", "--entities", "20",
			"--concurrency", "4", "--mix", mix, "--prefix", "tb")
		if code != 0 {
			t.Fatalf("bench: exit %d\n%s\n%s", code, stdout, stderr)
		}
		for _, want := range []string{
			"troupe bench: 400 operations or 1m0s, whichever comes first, 4 workers, 20 accounts (tb-*)",
			"setup: opened 20 accounts",
			"400 operations in ", "400 ok, 0 errors",
			"p50 ", "p90 ", "p99 ", "p99.9 ", "max ",
			"latency histogram (all operations):",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("report lacks %q:\n%s", want, stdout)
			}
		}
		// One row per operation of the mix, and their counts add up.
		total := 0
		for _, op := range []string{"deposit", "withdraw", "transfer", "balance", "account", "statement"} {
			m := regexp.MustCompile(`(?m)^\s+` + op + `\s+(\d+)\s+0\s`).FindStringSubmatch(stdout)
			if m == nil {
				t.Fatalf("no row for %s:\n%s", op, stdout)
			}
			var n int
			fmt.Sscan(m[1], &n)
			total += n
		}
		if total != 400 {
			t.Fatalf("the rows add up to %d operations, not 400:\n%s", total, stdout)
		}
		// The load was real: the accounts exist and took deposits.
		out, _, code := cli(t, p.url, "query", "account", `{"id":"tb-3"}`)
		if code != 0 || !strings.Contains(out, `"open":true`) || !strings.Contains(out, `"owner":"bench"`) {
			t.Fatalf("account tb-3 after the run: %d %s", code, out)
		}
	})

	t.Run("bounded by time, the same accounts again", func(t *testing.T) {
		start := time.Now()
		stdout, stderr, code := cli(t, p.url, "bench", "--duration", "1500ms", "--entities", "20", "--concurrency", "4",
			"--mix", "deposit=1,balance=1", "--prefix", "tb", "--protocol", "grpc")
		if code != 0 {
			t.Fatalf("bench: exit %d\n%s\n%s", code, stdout, stderr)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Fatalf("a 1.5s run took %s", took)
		}
		m := regexp.MustCompile(`(\d+) operations in (\S+): `).FindStringSubmatch(stdout)
		if m == nil || m[1] == "0" {
			t.Fatalf("report:\n%s", stdout)
		}
		if d, err := time.ParseDuration(m[2]); err != nil || d < 1400*time.Millisecond || d > 5*time.Second {
			t.Fatalf("ran %s (%v), want about 1.5s", m[2], err)
		}
		// Not a terminal: plain progress lines on stderr, one a second.
		if !regexp.MustCompile(`(?m)^\s*1\.\ds\s+\d+ ops\s+\d+/s\s+errors 0`).MatchString(stderr) || strings.Contains(stderr, "\r") {
			t.Fatalf("progress on stderr:\n%q", stderr)
		}
	})
}

func TestBenchFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unbounded", []string{"--duration", "0"}, "a run needs a bound"},
		{"unknown operation", []string{"--mix", "deposit=1,steal=5"}, `unknown operation "steal"`},
		{"no weight", []string{"--mix", "deposit=0"}, "no operation has a weight"},
		{"not a weight", []string{"--mix", "deposit"}, `"deposit" is not OP=WEIGHT`},
		{"twice", []string{"--mix", "deposit=1,deposit=2"}, "deposit named twice"},
		{"negative weight", []string{"--mix", "deposit=-1"}, "want a whole number"},
		{"one entity", []string{"--entities", "1"}, "--entities 1"},
		{"no workers", []string{"--concurrency", "0"}, "--concurrency 0"},
		{"bad protocol", []string{"--protocol", "carrier-pigeon"}, `--protocol "carrier-pigeon"`},
		{"bad node", []string{"--node", "localhost:8080"}, "want an http://"},
		{"negative count", []string{"--count", "-5"}, "--count -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"bench"}, tt.args...), &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want an error about %s", code, stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("a refused run printed %q", stdout.String())
			}
		})
	}
}

func TestBenchUnreachableNode(t *testing.T) {
	var stdout, stderr bytes.Buffer
	// Port 1 on loopback: nothing listens there.
	code := run([]string{"bench", "--node", "http://127.0.0.1:1", "--count", "10", "--timeout", "2s"}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "setup: account bench-") || !strings.Contains(stderr.String(), "unavailable") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestLatencyHistogram(t *testing.T) {
	// Every value lands in a bucket whose upper end is within 1/128 of it.
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		v := uint64(r.Int64N(int64(time.Hour)))
		b := latBucket(v)
		if b < 0 || b >= latBuckets {
			t.Fatalf("value %d: bucket %d out of range", v, b)
		}
		up := latUpper(b)
		if up < v || float64(up-v) > float64(v)/128+1 {
			t.Fatalf("value %d: bucket %d ends at %d", v, b, up)
		}
		if b > 0 && latUpper(b-1) >= v {
			t.Fatalf("value %d: the bucket before, %d, ends at %d", v, b-1, latUpper(b-1))
		}
	}
	if b := latBucket(math.MaxUint64); b >= latBuckets {
		t.Fatalf("the largest value falls outside: %d", b)
	}

	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value", []time.Duration{3 * time.Millisecond}, 0.99, 3 * time.Millisecond},
		{"median of 1..100ms", steps(100, time.Millisecond), 0.5, 50 * time.Millisecond},
		{"p99 of 1..100ms", steps(100, time.Millisecond), 0.99, 99 * time.Millisecond},
		{"p99.9 of 1..1000µs", steps(1000, time.Microsecond), 0.999, 999 * time.Microsecond},
		{"max", steps(100, time.Millisecond), 1, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l latencies
			for _, v := range tt.values {
				l.record(v)
			}
			got := l.quantile(tt.q)
			if math.Abs(float64(got-tt.want)) > float64(tt.want)/128 {
				t.Fatalf("quantile(%g) = %s, want %s", tt.q, got, tt.want)
			}
		})
	}

	// Merging keeps counts and the maximum.
	var a, b latencies
	a.record(time.Millisecond)
	b.record(5 * time.Millisecond)
	b.record(2 * time.Millisecond)
	a.merge(&b)
	if a.n != 3 || a.max != 5*time.Millisecond || a.countBelow(2*time.Millisecond) != 2 {
		t.Fatalf("merged: n %d, max %s, below 2ms %d", a.n, a.max, a.countBelow(2*time.Millisecond))
	}
}

func steps(n int, unit time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * unit
	}
	return out
}

// The report counts errors by code and shows one message of each.
func TestBenchReportErrors(t *testing.T) {
	w := &workerStats{byOp: map[string]*opStats{}, codes: map[string]int64{}, first: map[string]string{}}
	s := &benchStats{workers: []*workerStats{w}}
	outcomes := []error{
		nil, nil, nil,
		connect.NewError(connect.CodeFailedPrecondition, errors.New("rejected: plugin rate-limit: too many commands")),
		connect.NewError(connect.CodeFailedPrecondition, errors.New("rejected: insufficient funds")),
		connect.NewError(connect.CodeResourceExhausted, errors.New("mailbox full")),
	}
	for i, err := range outcomes {
		w.record("deposit", time.Duration(i+1)*time.Millisecond, err)
		s.ops.Add(1)
		if err != nil {
			s.errs.Add(1)
		}
	}
	var out bytes.Buffer
	writeBenchReport(&out, s, time.Second, false)
	for _, want := range []string{
		"6 operations in 1s: 6/s, 3 ok, 3 errors",
		"failed_precondition         2  e.g. rejected: plugin rate-limit: too many commands",
		"resource_exhausted          1  e.g. mailbox full",
		"max 6.00ms",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if i, j := strings.Index(out.String(), "failed_precondition"), strings.Index(out.String(), "resource_exhausted"); i > j {
		t.Errorf("codes are not sorted by count:\n%s", out.String())
	}
}

// flakyCommands is a command service that answers each (account, command)
// "unavailable" fails times before it takes it, as a node does while a
// shard's stream leader moves; it checks that every attempt carries the
// same idempotency key.
type flakyCommands struct {
	troupev1connect.UnimplementedCommandServiceHandler
	fails int
	mu    sync.Mutex
	tries map[string]int
	keys  map[string]string
}

func (f *flakyCommands) Send(_ context.Context, r *connect.Request[troupev1.SendRequest]) (*connect.Response[troupev1.SendResponse], error) {
	m := r.Msg
	k := m.GetId() + "/" + m.GetType()
	f.mu.Lock()
	defer f.mu.Unlock()
	if key, ok := f.keys[k]; ok && key != m.GetIdempotencyKey() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s sent again with key %q, first with %q", k, m.GetIdempotencyKey(), key))
	}
	f.keys[k] = m.GetIdempotencyKey()
	if f.tries[k]++; f.tries[k] <= f.fails {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("shard 3 is moving between nodes"))
	}
	return connect.NewResponse(&troupev1.SendResponse{Token: journal.TokenAt(0, uint64(len(f.tries))).String()}), nil
}

// The setup sends a command again after an error that allows it, with the
// same key, a bounded number of times.
func TestBenchSetupRetriesRetryableErrors(t *testing.T) {
	for _, tc := range []struct {
		fails int
		ok    bool
	}{{fails: 2, ok: true}, {fails: setupRetries + 1, ok: false}} {
		f := &flakyCommands{fails: tc.fails, tries: map[string]int{}, keys: map[string]string{}}
		mux := http.NewServeMux()
		mux.Handle(troupev1connect.NewCommandServiceHandler(f))
		srv := httptest.NewServer(mux)
		c := benchConfig{nodes: []string{srv.URL}, entities: 3, concurrency: 2, prefix: "t", protocol: "connect", timeout: 5 * time.Second}
		_, err := benchSetup(context.Background(), c, newBenchClients(c, nil))
		srv.Close()
		if tc.ok {
			if err != nil {
				t.Fatalf("%d failures per command: %v", tc.fails, err)
			}
			for k, n := range f.tries {
				if n != tc.fails+1 {
					t.Fatalf("%s sent %d times, want %d", k, n, tc.fails+1)
				}
			}
			if len(f.tries) != 6 {
				t.Fatalf("%d commands sent, want 6 (Open and Deposit of 3 accounts)", len(f.tries))
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "unavailable: shard 3 is moving") {
			t.Fatalf("%d failures per command: %v; want the unavailable error", tc.fails, err)
		}
		for k, n := range f.tries {
			if n > setupRetries+1 {
				t.Fatalf("%s sent %d times, more than %d", k, n, setupRetries+1)
			}
		}
	}
}
