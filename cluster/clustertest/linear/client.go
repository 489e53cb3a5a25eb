package linear

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// Pick is how a worker chooses the node of each request.
type Pick int

const (
	// RoundRobin: each worker goes through the nodes in turn, starting at
	// its own index, and moves on at every request (a retry goes to the
	// next node).
	RoundRobin Pick = iota
	// Random: a node chosen at random for every request.
	Random
)

// String returns "round-robin" or "random".
func (p Pick) String() string {
	switch p {
	case RoundRobin:
		return "round-robin"
	case Random:
		return "random"
	}
	return fmt.Sprintf("Pick(%d)", int(p))
}

// Mix weighs the kinds of commands the workers send. The zero Mix means
// {Deposit: 45, Withdraw: 35, Read: 20}.
type Mix struct {
	Deposit, Withdraw, Read int
}

// Config configures a Client. The zero value of every field but Nodes
// means its default.
type Config struct {
	// Nodes are the base URLs of the nodes' HTTP APIs, e.g.
	// "http://10.213.0.11:8080" (clustertest's Node.HTTPURL). Required.
	Nodes []string
	// HTTPClient sends the requests: clustertest's Cluster.HTTPClient to
	// reach nodes in network namespaces. Default: a client of the
	// Client's own, whose idle connections Run closes at its end.
	HTTPClient *http.Client
	// Recorder records the history. Default: a new one (Client.Recorder).
	Recorder *Recorder
	// Accounts is how many accounts the workers share. Default 8. The
	// checker's cost grows fast with the operations of one account that
	// overlap in time, so prefer more accounts to more workers per account.
	Accounts int
	// AccountPrefix names the accounts "<prefix>-<i>". Default "lin-" and
	// 8 random hex digits, so that runs against one node never share
	// accounts.
	AccountPrefix string
	// Workers is how many commands are in flight at once. Default 4.
	Workers int
	// Duration bounds the workload, counted from the end of the setup
	// (opening the accounts): no command starts after it; a command whose
	// outcome is still unknown may be retried past it (Attempts). Default
	// 5 s.
	Duration time.Duration
	// Ops, when positive, also bounds the number of commands.
	Ops int
	// MaxOpsPerAccount stops sending to an account after so many
	// commands (counting the probe). It keeps each account's history small
	// enough to check, and far below the refs an account remembers
	// (bank.Account.Refs: at least the last 1,000), which the reads rely
	// on. Default 200; at most 900.
	MaxOpsPerAccount int
	// AttemptTimeout bounds one request; the node gets it as the request's
	// deadline. Default 2 s.
	AttemptTimeout time.Duration
	// Attempts is how many times a Deposit or Withdraw is sent while its
	// outcome is unknown, with the same ref and idempotency key (a read is
	// sent once). Default 4.
	Attempts int
	// Backoff is the wait before the first retry; it doubles, up to 1 s.
	// Default 50 ms.
	Backoff time.Duration
	// Pick chooses the node of each request. Default RoundRobin.
	Pick Pick
	// Mix weighs deposits, withdrawals and reads. Default {45, 35, 20}.
	Mix Mix
	// MaxAmount bounds the amounts, drawn from 1..MaxAmount. Default 10.
	MaxAmount int64
	// Seed seeds the random choices; 0: a random seed.
	Seed uint64
	// NotApplied, when set, is asked about every error a node sent whose
	// code Classify takes as Unknown (code as Connect names it,
	// "unavailable"; the message): true says the contract promises that
	// the command was not applied, and the request is recorded as
	// Rejected with reason NotApplied instead of Unknown (the command is
	// still sent again). Default: nil, every such error is Unknown. A
	// wrong promise shows up in Check or in Audit.
	NotApplied func(code, message string) bool
	// Logger receives a line per unknown outcome (debug) and per run
	// (info). Default: discard.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultAccounts         = 8
	DefaultWorkers          = 4
	DefaultDuration         = 5 * time.Second
	DefaultMaxOpsPerAccount = 200
	DefaultAttemptTimeout   = 2 * time.Second
	DefaultAttempts         = 4
	DefaultBackoff          = 50 * time.Millisecond
	DefaultMaxAmount        = 10

	// maxOpsPerAccount keeps every account's refs within what the bank
	// remembers (maxRefs, 1,000), so that a read's probe ref is never
	// forgotten.
	maxOpsPerAccount = 900
	maxBackoff       = time.Second
)

// setDefaults fills in the zero fields.
func (c *Config) setDefaults() {
	if c.Accounts == 0 {
		c.Accounts = DefaultAccounts
	}
	if c.AccountPrefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.AccountPrefix = "lin-" + hex.EncodeToString(b[:])
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.MaxOpsPerAccount == 0 {
		c.MaxOpsPerAccount = DefaultMaxOpsPerAccount
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.Mix == (Mix{}) {
		c.Mix = Mix{Deposit: 45, Withdraw: 35, Read: 20}
	}
	if c.MaxAmount == 0 {
		c.MaxAmount = DefaultMaxAmount
	}
	if c.Seed == 0 {
		n, _ := rand.Int(rand.Reader, new(big.Int).SetUint64(1<<63))
		c.Seed = n.Uint64() + 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if len(c.Nodes) == 0 {
		errs = append(errs, errors.New("Nodes: at least one node's URL is needed"))
	}
	for _, n := range c.Nodes {
		if u, err := url.Parse(n); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("Nodes: %q is not an http(s) base URL", n))
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Accounts", int64(c.Accounts)}, {"Workers", int64(c.Workers)}, {"Ops", int64(c.Ops)},
		{"MaxOpsPerAccount", int64(c.MaxOpsPerAccount)}, {"Attempts", int64(c.Attempts)},
		{"Duration", int64(c.Duration)}, {"AttemptTimeout", int64(c.AttemptTimeout)}, {"Backoff", int64(c.Backoff)},
		{"MaxAmount", c.MaxAmount}, {"Mix.Deposit", int64(c.Mix.Deposit)}, {"Mix.Withdraw", int64(c.Mix.Withdraw)}, {"Mix.Read", int64(c.Mix.Read)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative", f.name, f.v))
		}
	}
	if c.MaxOpsPerAccount > maxOpsPerAccount {
		errs = append(errs, fmt.Errorf("MaxOpsPerAccount %d: at most %d, or an account may forget the probe ref its reads repeat", c.MaxOpsPerAccount, maxOpsPerAccount))
	}
	if c.Pick != RoundRobin && c.Pick != Random {
		errs = append(errs, fmt.Errorf("Pick %d: unknown", int(c.Pick)))
	}
	if strings.ContainsAny(c.AccountPrefix, "/ ") {
		errs = append(errs, fmt.Errorf("AccountPrefix %q: no slashes or spaces", c.AccountPrefix))
	}
	return errors.Join(errs...)
}

// ErrRunning is returned by Run when the Client runs already or ran.
var ErrRunning = errors.New("linear: the client has run already")

// Client sends a bank workload to the nodes and records its history. Make
// one per run with New; its methods are safe for concurrent use.
type Client struct {
	cfg      Config
	rec      *Recorder
	accounts []string
	nodes    []troupev1connect.CommandServiceClient
	ownHTTP  bool

	mu         sync.Mutex
	ran        bool
	stats      Stats
	used       map[string]int // commands sent per account
	ops        int            // commands started
	cmds       uint64         // ids of commands
	unresolved []*command     // deposits and withdrawals still Unknown
}

// Stats describes a run.
type Stats struct {
	// Commands counts the commands (one ref each, reads included), and
	// Requests the requests sent for them (retries included).
	Commands, Requests int
	// OK, Rejected and Unknown count the commands by their final outcome
	// (Rejected includes those whose last request was NotApplied).
	OK, Rejected, Unknown int
	// Errors counts the requests that got no definite answer, by code
	// a node answered ("unavailable", "deadline_exceeded", ...), or
	// "client_timeout" (AttemptTimeout passed with no answer) or
	// "transport" (no answer from a node at all: refused, reset, cut),
	// including the errors Config.NotApplied vouched for. Rejections are
	// not in it.
	Errors map[string]int
	// OtherRejections counts definite refusals other than insufficient
	// funds (a plugin's, a malformed request): a test of the bank through
	// the stock node expects none.
	OtherRejections int
	// Acknowledged counts, per account, the deposits and withdrawals the
	// client was told took effect (the probe included): Audit must find
	// each once in the account's stream.
	Acknowledged map[string]int
	// Took is how long the run took, setup included.
	Took time.Duration
}

// String summarises s for a test log.
func (s Stats) String() string {
	ack := 0
	for _, n := range s.Acknowledged {
		ack += n
	}
	return fmt.Sprintf("%d commands in %d requests over %s: %d ok (%d acknowledged writes), %d rejected (%d not for funds), %d unknown; errors %v",
		s.Commands, s.Requests, s.Took.Round(time.Millisecond), s.OK, ack, s.Rejected, s.OtherRejections, s.Unknown, s.Errors)
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("linear: %w", err)
	}
	c := &Client{cfg: cfg, rec: cfg.Recorder, used: map[string]int{}}
	if c.rec == nil {
		c.rec = NewRecorder()
	}
	if cfg.HTTPClient == nil {
		c.cfg.HTTPClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}
		c.ownHTTP = true
	}
	for _, n := range cfg.Nodes {
		c.nodes = append(c.nodes, troupev1connect.NewCommandServiceClient(c.cfg.HTTPClient, n))
	}
	for i := range cfg.Accounts {
		c.accounts = append(c.accounts, fmt.Sprintf("%s-%d", cfg.AccountPrefix, i))
	}
	c.stats.Errors = map[string]int{}
	c.stats.Acknowledged = map[string]int{}
	return c, nil
}

// Recorder returns the recorder of the client's history.
func (c *Client) Recorder() *Recorder { return c.rec }

// Accounts returns the ids of the accounts the client uses.
func (c *Client) Accounts() []string { return append([]string(nil), c.accounts...) }

// ProbeRef is the ref of an account's probe deposit, which the client's
// reads repeat (see Read).
func ProbeRef(account string) string { return account + "/probe" }

// probeAmount is the probe deposit's amount.
const probeAmount = 1

// Run opens the accounts, deposits each one's probe (recorded like any
// deposit), then runs the workers until Duration passes or Ops commands
// were sent, and returns when every worker has finished its last command.
// Cancelling ctx stops it sooner: requests in flight end Unknown, and Run
// returns ctx's error with the stats so far. Check the history afterwards
// (Recorder().Check): commands in flight are added to it only when they
// finish.
func (c *Client) Run(ctx context.Context) (Stats, error) {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return Stats{}, ErrRunning
	}
	c.ran = true
	c.mu.Unlock()
	if c.ownHTTP {
		defer c.cfg.HTTPClient.CloseIdleConnections()
	}
	start := time.Now()
	err := c.setup(ctx)
	if err == nil {
		deadline := time.Now().Add(c.cfg.Duration)
		var wg sync.WaitGroup
		for w := range c.cfg.Workers {
			rng := mrand.New(mrand.NewPCG(c.cfg.Seed+uint64(w)+1, uint64(w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.work(ctx, w, deadline, rng)
			}()
		}
		wg.Wait()
		err = ctx.Err()
	}
	c.mu.Lock()
	c.stats.Took = time.Since(start)
	s := c.stats.clone()
	c.mu.Unlock()
	c.cfg.Logger.Info("linear: run done", "stats", s.String())
	return s, err
}

func (s Stats) clone() Stats {
	o := s
	o.Errors = make(map[string]int, len(s.Errors))
	for k, v := range s.Errors {
		o.Errors[k] = v
	}
	o.Acknowledged = make(map[string]int, len(s.Acknowledged))
	for k, v := range s.Acknowledged {
		o.Acknowledged[k] = v
	}
	return o
}

// setup opens every account and deposits its probe, one account at a
// time per worker, retrying each until a definite answer.
func (c *Client) setup(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan string)
	for w := range min(c.cfg.Workers, len(c.accounts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := picker{c: c, next: w}
			proc := c.rec.NewClient()
			for a := range next {
				if err := c.open(ctx, &p, a); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				c.countSetup(a)
				proc = c.do(ctx, &p, proc, Input{Account: a, Kind: Deposit, Amount: probeAmount, Ref: ProbeRef(a)}, ProbeRef(a))
			}
		}()
	}
	for _, a := range c.accounts {
		next <- a
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// open opens account a: retried while the outcome is unknown (the same
// idempotency key), and "already open" after a retry is success.
func (c *Client) open(ctx context.Context, p *picker, a string) error {
	const attempts = 20
	var last error
	backoff := c.cfg.Backoff
	for i := range attempts {
		if i > 0 && !sleep(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, maxBackoff)
		out, _, _, err := c.send(ctx, p.pick(), a, "Open", map[string]any{"owner": "linear"}, a+"/open")
		switch {
		case out.Result == OK:
			return nil
		case out.Result == Rejected && i > 0 && strings.Contains(out.Err, "already open"):
			return nil
		case out.Result == Rejected:
			return fmt.Errorf("linear: open %s: %s", a, out.Err)
		}
		last = err
	}
	return fmt.Errorf("linear: open %s: no definite answer in %d attempts: %w", a, attempts, errors.Join(last, ctx.Err()))
}

// work is one worker: it sends commands until the deadline, the budget or
// ctx ends.
func (c *Client) work(ctx context.Context, w int, deadline time.Time, rng *mrand.Rand) {
	p := picker{c: c, next: w, rng: rng}
	proc := c.rec.NewClient()
	for seq := 0; ctx.Err() == nil && time.Now().Before(deadline); seq++ {
		a, ok := c.take(rng)
		if !ok {
			return
		}
		in := Input{Account: a}
		switch x := rng.IntN(c.cfg.Mix.Deposit + c.cfg.Mix.Withdraw + c.cfg.Mix.Read); {
		case x < c.cfg.Mix.Deposit:
			in.Kind, in.Amount, in.Ref = Deposit, 1+rng.Int64N(c.cfg.MaxAmount), fmt.Sprintf("w%d-%d", w, seq)
		case x < c.cfg.Mix.Deposit+c.cfg.Mix.Withdraw:
			in.Kind, in.Amount, in.Ref = Withdraw, 1+rng.Int64N(c.cfg.MaxAmount), fmt.Sprintf("w%d-%d", w, seq)
		default:
			in.Kind, in.Amount, in.Ref = Read, probeAmount, ProbeRef(a)
		}
		key := fmt.Sprintf("%s/k-w%d-%d", a, w, seq)
		proc = c.do(ctx, &p, proc, in, key)
	}
}

// take chooses an account that has budget left and counts the command;
// false when the run's or every account's budget is spent.
func (c *Client) take(rng *mrand.Rand) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Ops > 0 && c.ops >= c.cfg.Ops {
		return "", false
	}
	first := rng.IntN(len(c.accounts))
	for i := range c.accounts {
		a := c.accounts[(first+i)%len(c.accounts)]
		if c.used[a] < c.cfg.MaxOpsPerAccount {
			c.used[a]++
			c.ops++
			return a, true
		}
	}
	return "", false
}

// countSetup counts a setup command against a's budget (not the run's).
func (c *Client) countSetup(a string) {
	c.mu.Lock()
	c.used[a]++
	c.mu.Unlock()
}

// attempt is one request of a command.
type attempt struct {
	call, ret int64
	node      string
	out       Output
	dup       bool
}

// command is one command (one ref and idempotency key) and its requests.
type command struct {
	id    uint64
	in    Input
	key   string
	proc  int // the process of its first request
	tries []attempt
}

func (cmd *command) last() attempt { return cmd.tries[len(cmd.tries)-1] }

// do sends in as a new command (retrying a Deposit or Withdraw while its
// outcome is unknown), records it, and returns the worker's process id
// for its next command (a new one after an Unknown operation).
func (c *Client) do(ctx context.Context, p *picker, proc int, in Input, key string) int {
	c.mu.Lock()
	c.cmds++
	cmd := &command{id: c.cmds, in: in, key: key, proc: proc}
	c.mu.Unlock()
	attempts := 1
	if in.Kind != Read {
		attempts = c.cfg.Attempts
	}
	c.try(ctx, p, cmd, attempts)

	c.mu.Lock()
	c.stats.Commands++
	c.count(cmd, +1)
	if cmd.last().out.retry() && in.Kind != Read {
		c.unresolved = append(c.unresolved, cmd)
	}
	c.mu.Unlock()
	return c.record(cmd)
}

// try sends cmd up to attempts more times while its outcome is unknown.
func (c *Client) try(ctx context.Context, p *picker, cmd *command, attempts int) {
	backoff := c.cfg.Backoff
	payload := map[string]any{"amount": cmd.in.Amount, "ref": cmd.in.Ref}
	typ := "Deposit"
	if cmd.in.Kind == Withdraw {
		typ = "Withdraw"
	}
	for i := range attempts {
		if i > 0 && !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
		node := p.pick()
		call := c.rec.Now()
		out, dup, code, err := c.send(ctx, node, cmd.in.Account, typ, payload, cmd.key)
		if out.Result == Unknown && c.cfg.NotApplied != nil && connect.IsWireError(err) && c.cfg.NotApplied(code, connectMessage(err)) {
			out.Result, out.Reason = Rejected, NotApplied
		}
		cmd.tries = append(cmd.tries, attempt{call: call, ret: c.rec.Now(), node: c.cfg.Nodes[node], out: out, dup: dup})
		c.mu.Lock()
		c.stats.Requests++
		if out.Result == Unknown || out.Reason == NotApplied {
			c.stats.Errors[code]++
		}
		c.mu.Unlock()
		if !out.retry() {
			return
		}
		c.cfg.Logger.Debug("linear: unknown outcome", "stream", "account/"+cmd.in.Account, "node", c.cfg.Nodes[node], "err", err)
		if ctx.Err() != nil {
			return
		}
	}
}

// retry tells whether a command that ended with o is worth sending again.
func (o Output) retry() bool { return o.Result == Unknown || o.Reason == NotApplied }

// count adds (sign +1) or takes back (-1) cmd's final outcome in the
// stats. Called with c.mu held.
func (c *Client) count(cmd *command, sign int) {
	last := cmd.last().out
	switch last.Result {
	case OK:
		c.stats.OK += sign
		if cmd.in.Kind != Read {
			c.stats.Acknowledged[cmd.in.Account] += sign
		}
	case Rejected:
		c.stats.Rejected += sign
		if last.Reason == OtherRejection {
			c.stats.OtherRejections += sign
		}
	default:
		c.stats.Unknown += sign
	}
}

// record puts cmd's operations into the history, in place of those it
// recorded for cmd before, and returns the process id for the worker's
// next command.
//
// What is recorded: a command whose final answer was a repeat of its
// idempotency key (duplicate) is one operation from the first request's
// call to that answer, with the balance of the first reply, which is the
// balance right after the command took effect: it did so once, between
// the two. Otherwise every request is an operation of its own, with the
// same ref: the Unknown ones and the definite last one (a repeat of the
// ref answers the balance of its time, which the model knows).
func (c *Client) record(cmd *command) int {
	last := cmd.last()
	if last.dup && last.out.Result == OK {
		c.rec.replace(cmd.id, []Op{{Client: cmd.proc, Input: cmd.in, Output: last.out, Call: cmd.tries[0].call, Return: last.ret,
			Meta: fmt.Sprintf("%d requests; duplicate answered by %s", len(cmd.tries), last.node)}})
		return cmd.proc
	}
	ops := make([]Op, 0, len(cmd.tries))
	proc := cmd.proc
	for i, t := range cmd.tries {
		if i > 0 && cmd.tries[i-1].out.Result == Unknown {
			proc = c.rec.NewClient()
		}
		ops = append(ops, Op{Client: proc, Input: cmd.in, Output: t.out, Call: t.call, Return: t.ret,
			Meta: fmt.Sprintf("request %d of %d to %s", i+1, len(cmd.tries), t.node)})
	}
	c.rec.replace(cmd.id, ops)
	if last.out.Result == Unknown {
		return c.rec.NewClient()
	}
	return proc
}

// Settle sends again, with the same refs and idempotency keys, the
// deposits and withdrawals whose outcome is still unknown (each up to
// Attempts times, Workers at once), and records the answers: call it once
// the cluster is healthy again (after Heal and restarts), before Check.
// A command answered now leaves the history with one open-ended Unknown
// operation fewer, which makes the check cheaper and its verdict
// sharper, and lets Audit count it as acknowledged or not applied. It
// returns the stats of the whole run so far; Run must have returned.
func (c *Client) Settle(ctx context.Context) (Stats, error) {
	c.mu.Lock()
	todo := c.unresolved
	c.unresolved = nil
	c.mu.Unlock()
	next := make(chan *command)
	var wg sync.WaitGroup
	for w := range min(c.cfg.Workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := picker{c: c, next: w}
			for cmd := range next {
				c.mu.Lock()
				c.count(cmd, -1)
				c.mu.Unlock()
				c.try(ctx, &p, cmd, c.cfg.Attempts)
				c.mu.Lock()
				c.count(cmd, +1)
				if cmd.last().out.retry() {
					c.unresolved = append(c.unresolved, cmd)
				}
				c.mu.Unlock()
				c.record(cmd)
			}
		}()
	}
	for _, cmd := range todo {
		next <- cmd
	}
	close(next)
	wg.Wait()
	if c.ownHTTP {
		c.cfg.HTTPClient.CloseIdleConnections()
	}
	return c.Stats(), ctx.Err()
}

// Stats returns the stats of the run so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.clone()
}

// send sends one command to node i and classifies the answer (Classify).
// code names the error of an Unknown answer for Stats.Errors.
func (c *Client) send(ctx context.Context, i int, account, typ string, payload map[string]any, key string) (out Output, dup bool, code string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	body, err := structpb.NewStruct(payload)
	if err != nil {
		return Output{Result: Rejected, Reason: OtherRejection, Err: err.Error()}, false, "", err
	}
	resp, err := c.nodes[i].Send(ctx, connect.NewRequest(&troupev1.SendRequest{
		Kind: "account", Id: account, Type: typ, Payload: body, IdempotencyKey: key,
	}))
	if err != nil {
		out = Classify(err)
		switch {
		case connect.IsWireError(err):
			code = connect.CodeOf(err).String()
		case connect.CodeOf(err) == connect.CodeDeadlineExceeded:
			code = "client_timeout"
		default:
			code = "transport"
		}
		return out, false, code, err
	}
	out = Output{Result: OK}
	if v, ok := resp.Msg.GetReply().GetStructValue().GetFields()["balance"]; ok {
		if _, isNum := v.GetKind().(*structpb.Value_NumberValue); isNum {
			out.Balance, out.BalanceKnown = int64(v.GetNumberValue()), true
		}
	}
	return out, resp.Msg.GetDuplicate(), "", nil
}

// insufficientFunds matches the bank's rejection of a withdrawal larger
// than the balance, which names the balance.
var insufficientFunds = regexp.MustCompile(`insufficient funds: balance (-?\d+)`)

// Classify turns the error of a CommandService.Send call made with a
// Connect client into an Output, by the error contract (docs/errors.md),
// conservatively: only a code that says the command was refused before it
// ran is Rejected; everything else may have taken effect and is Unknown.
//
//	failed_precondition ("insufficient funds")   Rejected, InsufficientFunds (with the balance the message names)
//	failed_precondition (other), invalid_argument,
//	not_found, permission_denied, out_of_range   Rejected, OtherRejection
//	unavailable, deadline_exceeded, aborted,
//	resource_exhausted, canceled, internal,
//	unknown, and any error that did not come
//	from a node (connect.IsWireError is false)   Unknown
//
// Why retryable codes are Unknown although some of their causes (a node
// that is stopping, a full mailbox, a plugin that failed) come before the
// command runs: the contract does not promise it for the code, and in a
// cluster the same code also reaches the client from a forward whose
// outcome the forwarding node did not learn.
func Classify(err error) Output {
	if err == nil {
		return Output{Result: OK}
	}
	out := Output{Result: Unknown, Err: err.Error()}
	if !connect.IsWireError(err) {
		return out
	}
	code := connect.CodeOf(err)
	out.Err = code.String() + ": " + connectMessage(err)
	switch code {
	case connect.CodeFailedPrecondition:
		out.Result, out.Reason = Rejected, OtherRejection
		if m := insufficientFunds.FindStringSubmatch(connectMessage(err)); m != nil {
			out.Reason = InsufficientFunds
			if b, perr := strconv.ParseInt(m[1], 10, 64); perr == nil {
				out.Balance, out.BalanceKnown = b, true
			}
		} else if strings.Contains(connectMessage(err), "insufficient funds") {
			out.Reason = InsufficientFunds
		}
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied, connect.CodeOutOfRange:
		out.Result, out.Reason = Rejected, OtherRejection
	}
	return out
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// picker chooses nodes for one worker.
type picker struct {
	c    *Client
	next int
	rng  *mrand.Rand
}

func (p *picker) pick() int {
	n := len(p.c.cfg.Nodes)
	if p.c.cfg.Pick == Random && p.rng != nil {
		return p.rng.IntN(n)
	}
	i := p.next % n
	p.next++
	return i
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
