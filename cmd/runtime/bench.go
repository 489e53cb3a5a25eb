package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// benchConfig is one load run of `troupe bench`.
type benchConfig struct {
	nodes       []string      // API URLs; workers spread over them
	entities    int           // accounts the run uses
	concurrency int           // workers, each with one request in flight
	duration    time.Duration // stop after this long (0: no time bound)
	count       int64         // stop after this many operations (0: no count bound)
	mix         []benchOp     // operations and their weights
	prefix      string        // account ids are PREFIX-N
	protocol    string        // connect, grpc or json
	timeout     time.Duration // bound of one request
}

// maxBenchDuration bounds a run with no count, and the setup.
const maxBenchDuration = 24 * time.Hour

// benchOp is one kind of operation of the bank demo, with its weight.
type benchOp struct {
	name   string
	weight int
}

// benchOps are the operations a mix may name: commands, then queries.
var benchOps = []string{"deposit", "withdraw", "transfer", "balance", "account", "statement"}

// parseMix reads "deposit=60,withdraw=10,balance=30".
func parseMix(s string) ([]benchOp, error) {
	var out []benchOp
	seen := map[string]bool{}
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: %q is not OP=WEIGHT", s, part)
		}
		name = strings.TrimSpace(name)
		known := false
		for _, op := range benchOps {
			known = known || op == name
		}
		if !known {
			return nil, fmt.Errorf("mix %q: unknown operation %q (want %s)", s, name, strings.Join(benchOps, ", "))
		}
		if seen[name] {
			return nil, fmt.Errorf("mix %q: %s named twice", s, name)
		}
		seen[name] = true
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 || n > 1_000_000 {
			return nil, fmt.Errorf("mix %q: weight of %s %q: want a whole number from 0", s, name, w)
		}
		total += n
		if n > 0 {
			out = append(out, benchOp{name, n})
		}
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: no operation has a weight", s)
	}
	return out, nil
}

func (c benchConfig) validate() error {
	switch {
	case len(c.nodes) == 0:
		return errors.New("--node: at least one node URL")
	case c.entities < 2 || c.entities > 1_000_000:
		return fmt.Errorf("--entities %d: want 2 to 1000000", c.entities)
	case c.concurrency < 1 || c.concurrency > 10_000:
		return fmt.Errorf("--concurrency %d: want 1 to 10000", c.concurrency)
	case c.duration < 0 || c.duration > maxBenchDuration:
		return fmt.Errorf("--duration %s: want 0 to %s", c.duration, maxBenchDuration)
	case c.count < 0:
		return fmt.Errorf("--count %d: negative", c.count)
	case c.duration == 0 && c.count == 0:
		return errors.New("--duration and --count are both 0: a run needs a bound")
	case c.timeout <= 0:
		return fmt.Errorf("--timeout %s: want more than 0", c.timeout)
	}
	switch c.protocol {
	case "connect", "grpc", "json":
	default:
		return fmt.Errorf("--protocol %q: want connect, grpc or json", c.protocol)
	}
	for _, n := range c.nodes {
		if !strings.HasPrefix(n, "http://") && !strings.HasPrefix(n, "https://") {
			return fmt.Errorf("--node %q: want an http:// or https:// URL", n)
		}
	}
	return nil
}

func newBenchCmd() *cobra.Command {
	var (
		c   benchConfig
		mix string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Put load on a running node or cluster with the bank demo's commands and queries",
		Long: `Run a bounded load of the bank demo's commands and queries against a running
node (or the nodes of a cluster: workers spread over every --node) and print
throughput, latency percentiles and error counts by code.

It first opens --entities accounts (PREFIX-0 ... PREFIX-N-1, with a deposit
each, not measured), then runs --concurrency workers, each with one request
in flight, until --duration or --count is reached (whichever comes first),
choosing each operation by the --mix weights and its account at random.
Operations: deposit, withdraw, transfer (commands); balance, account,
statement (queries). Progress shows on stderr: one line redrawn in place on a
terminal, a line a second otherwise. Ctrl-C ends the run early and still
prints the report.`,
		Example: `  troupe bench
  troupe bench --duration 30s --concurrency 64 --entities 5000
  troupe bench --count 10000 --mix deposit=50,transfer=10,balance=40
  troupe bench --node http://10.0.0.1:8080,http://10.0.0.2:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.mix, err = parseMix(mix); err != nil {
				return err
			}
			if c.prefix == "" {
				var b [3]byte
				_, _ = rand.Read(b[:])
				c.prefix = "bench-" + hex.EncodeToString(b[:])
			}
			if err := c.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBench(ctx, c, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&c.nodes, "node", []string{defaultNode}, "URL of a node's API (repeat, or separate with commas, for a cluster)")
	f.IntVar(&c.entities, "entities", 1000, "number of accounts")
	f.IntVarP(&c.concurrency, "concurrency", "c", 16, "workers, each with one request in flight")
	f.DurationVarP(&c.duration, "duration", "d", 10*time.Second, "stop after this long (0: only --count bounds the run)")
	f.Int64VarP(&c.count, "count", "n", 0, "stop after this many operations (0: only --duration bounds the run)")
	f.StringVar(&mix, "mix", "deposit=60,withdraw=10,balance=30", "operations and their weights: "+strings.Join(benchOps, ", "))
	f.StringVar(&c.prefix, "prefix", "", "account id prefix (default: bench- and a random suffix, so runs do not share accounts)")
	f.StringVar(&c.protocol, "protocol", "connect", "API protocol: connect (protobuf over HTTP/1.1), grpc (HTTP/2 without TLS) or json")
	f.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound of one request")
	return cmd
}

// benchClients are one node's API clients.
type benchClients struct {
	cmd   troupev1connect.CommandServiceClient
	query troupev1connect.QueryServiceClient
}

func newBenchClients(c benchConfig, auth *clientAuth) []benchClients {
	var opts []connect.ClientOption
	tr := &http.Transport{MaxIdleConnsPerHost: c.concurrency, MaxConnsPerHost: 0, IdleConnTimeout: 90 * time.Second}
	switch c.protocol {
	case "grpc":
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		p.SetHTTP2(true) // https:// nodes
		tr.Protocols = p
		opts = append(opts, connect.WithGRPC())
	case "json":
		opts = append(opts, connect.WithProtoJSON())
	}
	var rt http.RoundTripper = tr
	if auth != nil { // --token and --tls-ca (clientauth.go)
		tr.TLSClientConfig = auth.tr.TLSClientConfig.Clone()
		rt = tokenTransport{token: auth.token, base: tr}
	}
	hc := &http.Client{Transport: rt, Timeout: c.timeout}
	out := make([]benchClients, len(c.nodes))
	for i, n := range c.nodes {
		n = strings.TrimSuffix(n, "/")
		out[i] = benchClients{
			cmd:   troupev1connect.NewCommandServiceClient(hc, n, opts...),
			query: troupev1connect.NewQueryServiceClient(hc, n, opts...),
		}
	}
	return out
}

// benchStats are the counters of a run. Each worker records into its own
// histogram; the progress line and the report merge them.
type benchStats struct {
	ops, errs atomic.Int64
	workers   []*workerStats
}

type workerStats struct {
	mu   sync.Mutex
	all  latencies
	byOp map[string]*opStats
	// errors by code, with one message each for the report
	codes map[string]int64
	first map[string]string
}

type opStats struct {
	lat  latencies
	errs int64
}

func (w *workerStats) record(op string, d time.Duration, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.record(d)
	s := w.byOp[op]
	if s == nil {
		s = &opStats{}
		w.byOp[op] = s
	}
	s.lat.record(d)
	if err != nil {
		s.errs++
		code := connect.CodeOf(err).String()
		w.codes[code]++
		if _, ok := w.first[code]; !ok {
			msg := err.Error()
			var ce *connect.Error
			if errors.As(err, &ce) {
				msg = ce.Message()
			}
			w.first[code] = msg
		}
	}
}

func (s *benchStats) merged() (all latencies, byOp map[string]*opStats, codes map[string]int64, first map[string]string) {
	byOp, codes, first = map[string]*opStats{}, map[string]int64{}, map[string]string{}
	for _, w := range s.workers {
		w.mu.Lock()
		all.merge(&w.all)
		for op, st := range w.byOp {
			m := byOp[op]
			if m == nil {
				m = &opStats{}
				byOp[op] = m
			}
			m.lat.merge(&st.lat)
			m.errs += st.errs
		}
		for c, n := range w.codes {
			codes[c] += n
		}
		for c, msg := range w.first {
			if _, ok := first[c]; !ok {
				first[c] = msg
			}
		}
		w.mu.Unlock()
	}
	return all, byOp, codes, first
}

func runBench(ctx context.Context, c benchConfig, stdout, stderr io.Writer) error {
	clients := newBenchClients(c, clientAuthOf(ctx))
	fmt.Fprintf(stdout, "troupe bench: %s, %d workers, %d accounts (%s-*), mix %s, %s protocol\n",
		describeBounds(c), c.concurrency, c.entities, c.prefix, describeMix(c.mix), c.protocol)
	fmt.Fprintf(stdout, "nodes: %s\n", strings.Join(c.nodes, ", "))

	// Setup: open the accounts with a first deposit, so that withdrawals
	// and transfers have money to move. Not measured.
	start := time.Now()
	setupCtx, cancel := context.WithTimeout(ctx, maxBenchDuration)
	written, err := benchSetup(setupCtx, c, clients)
	cancel()
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	// Queries read projections: wait until they have applied the setup.
	if !written.IsZero() {
		p, _ := structpb.NewStruct(map[string]any{"id": accountID(c.prefix, c.entities-1)})
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		for _, cl := range clients {
			if _, err := cl.query.Query(wctx, connect.NewRequest(&troupev1.QueryRequest{Name: "balance", Params: p, MinPosition: written.String(), TimeoutMs: 60_000})); err != nil {
				cancel()
				return fmt.Errorf("setup: waiting for the read models: %v", err)
			}
		}
		cancel()
	}
	fmt.Fprintf(stdout, "setup: opened %d accounts in %s\n", c.entities, time.Since(start).Round(time.Millisecond))

	stats := &benchStats{}
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	if c.duration > 0 {
		runCtx, cancelRun = context.WithTimeout(ctx, c.duration)
		defer cancelRun()
	}
	var issued atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range c.concurrency {
		w := &workerStats{byOp: map[string]*opStats{}, codes: map[string]int64{}, first: map[string]string{}}
		stats.workers = append(stats.workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(i), uint64(t0.UnixNano())))
			cl := clients[i%len(clients)]
			seq := 0
			for runCtx.Err() == nil {
				if c.count > 0 && issued.Add(1) > c.count {
					return
				}
				op := pick(c.mix, r)
				seq++
				begin := time.Now()
				// The call runs on ctx, not runCtx: the run's deadline stops
				// workers from starting calls, and the calls in flight
				// finish and count (a server would otherwise answer
				// deadline_exceeded to calls cut short by the end of the
				// run). Only an interrupt cancels them.
				err := benchCall(ctx, cl, c, op, r, fmt.Sprintf("%d-%d", i, seq))
				if err != nil && ctx.Err() != nil {
					return // interrupted during this call: not a result
				}
				w.record(op, time.Since(begin), err)
				stats.ops.Add(1)
				if err != nil {
					stats.errs.Add(1)
				}
			}
		}()
	}

	// Progress until the workers are done.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tty := isTerminal(stderr)
	every := time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastOps, lastAt := int64(0), t0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case now := <-tick.C:
			ops := stats.ops.Load()
			rate := float64(ops-lastOps) / now.Sub(lastAt).Seconds()
			if !tty || now.Sub(lastAt) >= time.Second {
				lastOps, lastAt = ops, now
			}
			all, _, _, _ := stats.merged()
			line := fmt.Sprintf("%6.1fs  %9d ops  %8.0f/s  errors %d  p50 %s  p99 %s",
				now.Sub(t0).Seconds(), ops, rate, stats.errs.Load(), ms(all.quantile(0.5)), ms(all.quantile(0.99)))
			if tty {
				fmt.Fprintf(stderr, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(stderr, line)
			}
		}
	}
	elapsed := time.Since(t0)
	if tty {
		fmt.Fprint(stderr, "\r\x1b[K")
	}
	writeBenchReport(stdout, stats, elapsed, ctx.Err() != nil)
	return nil
}

func describeBounds(c benchConfig) string {
	switch {
	case c.count > 0 && c.duration > 0:
		return fmt.Sprintf("%d operations or %s, whichever comes first", c.count, c.duration)
	case c.count > 0:
		return fmt.Sprintf("%d operations", c.count)
	}
	return c.duration.String()
}

func describeMix(mix []benchOp) string {
	parts := make([]string, len(mix))
	for i, op := range mix {
		parts[i] = fmt.Sprintf("%s=%d", op.name, op.weight)
	}
	return strings.Join(parts, ",")
}

func accountID(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }

// benchSetup opens the accounts, concurrency at a time, and returns the
// consistency token of everything it appended.
func benchSetup(ctx context.Context, c benchConfig, clients []benchClients) (journal.Token, error) {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		written journal.Token
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[i%len(clients)]
			for ctx.Err() == nil {
				n := int(next.Add(1)) - 1
				if n >= c.entities {
					return
				}
				id := accountID(c.prefix, n)
				pos, err := setupSend(ctx, cl, id, "Open", map[string]any{"owner": "bench"}, "open")
				if err == nil {
					pos, err = setupSend(ctx, cl, id, "Deposit", map[string]any{"amount": 100_000}, "seed")
				}
				if err != nil {
					// %v, not %w: the CLI prints a wrapped API error without its context.
					errOnce.Do(func() { first = fmt.Errorf("account %s: %v", id, err) })
					cancel()
					return
				}
				mu.Lock()
				written = written.Merge(pos)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return journal.Token{}, first
	}
	return written, ctx.Err()
}

// setupRetries bounds how often the setup sends one of its commands again
// after an error that allows it (a node that could not take it now, such as
// a shard whose stream leader is moving right after a cluster starts, or no
// answer in time): the setup's commands have idempotency keys, so a retry
// applies each at most once.
const setupRetries = 5

// setupSend is benchSend for the setup's account commands, retried.
func setupSend(ctx context.Context, cl benchClients, id, typ string, payload map[string]any, key string) (journal.Token, error) {
	for attempt := 1; ; attempt++ {
		pos, err := benchSend(ctx, cl, "account", id, typ, payload, key)
		if err == nil || attempt > setupRetries || !sendRetryable(err) {
			return pos, err
		}
		select {
		case <-time.After(sendBackoff(attempt)):
		case <-ctx.Done():
			return pos, err
		}
	}
}

// benchSend sends one command; key makes it idempotent (a setup run again with
// the same --prefix repeats nothing).
func benchSend(ctx context.Context, cl benchClients, kind, id, typ string, payload map[string]any, key string) (journal.Token, error) {
	st, err := structpb.NewStruct(payload)
	if err != nil {
		return journal.Token{}, err
	}
	req := &troupev1.SendRequest{Kind: kind, Id: id, Type: typ, Payload: st}
	if key != "" {
		req.IdempotencyKey = key
	}
	resp, err := cl.cmd.Send(ctx, connect.NewRequest(req))
	if err != nil {
		return journal.Token{}, err
	}
	return journal.ParseToken(resp.Msg.GetToken())
}

// pick chooses an operation by weight.
func pick(mix []benchOp, r *mrand.Rand) string {
	total := 0
	for _, op := range mix {
		total += op.weight
	}
	n := r.IntN(total)
	for _, op := range mix {
		if n < op.weight {
			return op.name
		}
		n -= op.weight
	}
	return mix[len(mix)-1].name
}

// benchCall runs one operation on a random account.
func benchCall(ctx context.Context, cl benchClients, c benchConfig, op string, r *mrand.Rand, ref string) error {
	n := r.IntN(c.entities)
	id := accountID(c.prefix, n)
	var err error
	switch op {
	case "deposit":
		_, err = benchSend(ctx, cl, "account", id, "Deposit", map[string]any{"amount": 1 + r.IntN(100)}, "")
	case "withdraw":
		_, err = benchSend(ctx, cl, "account", id, "Withdraw", map[string]any{"amount": 1 + r.IntN(10)}, "")
	case "transfer":
		// Another account: shift by 1 to entities-1.
		to := accountID(c.prefix, (n+1+r.IntN(c.entities-1))%c.entities)
		_, err = benchSend(ctx, cl, "transfer", c.prefix+"-t"+ref, "Start", map[string]any{"from": id, "to": to, "amount": 1 + r.IntN(10)}, "")
	default: // queries
		params := map[string]any{"id": id}
		if op == "statement" {
			params["limit"] = 10
		}
		var p *structpb.Struct
		if p, err = structpb.NewStruct(params); err == nil {
			_, err = cl.query.Query(ctx, connect.NewRequest(&troupev1.QueryRequest{Name: op, Params: p}))
		}
	}
	return err
}

func writeBenchReport(w io.Writer, s *benchStats, elapsed time.Duration, interrupted bool) {
	all, byOp, codes, first := s.merged()
	ops, errs := s.ops.Load(), s.errs.Load()
	if interrupted {
		fmt.Fprintln(w, "interrupted: the report covers the operations done so far")
	}
	fmt.Fprintf(w, "\n%d operations in %s: %.0f/s, %d ok, %d errors\n", ops, elapsed.Round(time.Millisecond),
		float64(ops)/elapsed.Seconds(), ops-errs, errs)
	if ops == 0 {
		return
	}
	fmt.Fprintf(w, "latency: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n\n",
		ms(all.quantile(0.5)), ms(all.quantile(0.9)), ms(all.quantile(0.99)), ms(all.quantile(0.999)), ms(all.max))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\terrors\trate/s\tp50\tp90\tp99\tp99.9\tmax\t")
	names := make([]string, 0, len(byOp))
	for op := range byOp {
		names = append(names, op)
	}
	sort.Slice(names, func(i, j int) bool { return opIndex(names[i]) < opIndex(names[j]) })
	for _, op := range names {
		st := byOp[op]
		l := &st.lat
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", op, l.n, st.errs, float64(l.n)/elapsed.Seconds(),
			ms(l.quantile(0.5)), ms(l.quantile(0.9)), ms(l.quantile(0.99)), ms(l.quantile(0.999)), ms(l.max))
	}
	tw.Flush()

	if len(codes) > 0 {
		fmt.Fprintln(w, "\nerrors by code:")
		cs := make([]string, 0, len(codes))
		for c := range codes {
			cs = append(cs, c)
		}
		sort.Slice(cs, func(i, j int) bool {
			return codes[cs[i]] > codes[cs[j]] || codes[cs[i]] == codes[cs[j]] && cs[i] < cs[j]
		})
		for _, c := range cs {
			fmt.Fprintf(w, "  %-20s %8d  e.g. %s\n", c, codes[c], first[c])
		}
	}

	fmt.Fprintln(w, "\nlatency histogram (all operations):")
	writeHistogram(w, &all)
}

func opIndex(op string) int {
	for i, o := range benchOps {
		if o == op {
			return i
		}
	}
	return len(benchOps)
}

// ms prints a duration in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
}

// writeHistogram draws the share of operations in 1-2-5 latency bands.
func writeHistogram(w io.Writer, l *latencies) {
	if l.n == 0 {
		return
	}
	var bounds []time.Duration
	for d := 100 * time.Microsecond; d < 100*time.Second; d *= 10 {
		bounds = append(bounds, d, 2*d, 5*d)
	}
	lo := 0
	for lo < len(bounds)-1 && l.countBelow(bounds[lo]) == 0 {
		lo++
	}
	prev := int64(0)
	for i := lo; i < len(bounds); i++ {
		cum := l.countBelow(bounds[i])
		n := cum - prev
		prev = cum
		label := "≤ " + strconv.FormatFloat(float64(bounds[i])/float64(time.Millisecond), 'f', -1, 64) + "ms"
		share := float64(n) / float64(l.n)
		bar := strings.Repeat("█", int(math.Round(share*50)))
		fmt.Fprintf(w, "  %9s  %-50s %6.2f%%  %d\n", label, bar, 100*share, n)
		if cum == l.n {
			break
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// latencies is a log-linear histogram of durations in nanoseconds: exact
// below 2^latSub ns, then 2^(latSub-1) buckets per power of two, so every
// value is kept within 1/128 (0.8%) of itself. It is not safe for
// concurrent use.
type latencies struct {
	counts [latBuckets]int64
	n      int64
	max    time.Duration
}

const (
	latSub     = 8
	latHalf    = 1 << (latSub - 1)
	latBuckets = latHalf*(64-latSub) + 1<<latSub
)

func latBucket(v uint64) int {
	if v < 1<<latSub {
		return int(v)
	}
	e := bits.Len64(v) - latSub
	return latHalf*e + int(v>>e)
}

// latUpper is the largest value of bucket i.
func latUpper(i int) uint64 {
	if i < 1<<latSub {
		return uint64(i)
	}
	e := i/latHalf - 1
	m := uint64(i - latHalf*e)
	return (m+1)<<e - 1
}

func (l *latencies) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	l.counts[latBucket(uint64(d))]++
	l.n++
	l.max = max(l.max, d)
}

func (l *latencies) merge(o *latencies) {
	for i, c := range o.counts {
		l.counts[i] += c
	}
	l.n += o.n
	l.max = max(l.max, o.max)
}

// quantile is the value at quantile q (0 < q <= 1): the upper end of the
// bucket that holds it, never above the largest value seen.
func (l *latencies) quantile(q float64) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(l.n)))
	rank = min(max(rank, 1), l.n)
	var cum int64
	for i, c := range l.counts {
		cum += c
		if cum >= rank {
			return min(time.Duration(latUpper(i)), l.max)
		}
	}
	return l.max
}

// countBelow is the number of values at most d (to the histogram's
// precision).
func (l *latencies) countBelow(d time.Duration) int64 {
	last := latBucket(uint64(d))
	var cum int64
	for i := 0; i <= last && i < len(l.counts); i++ {
		cum += l.counts[i]
	}
	return cum
}
