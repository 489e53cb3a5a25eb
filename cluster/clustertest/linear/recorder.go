package linear

import (
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op is one operation of a history: who sent it, what it was, what the
// client saw, and when (nanoseconds on the recorder's monotonic clock).
type Op struct {
	// Client is the process that sent it, zero-indexed (porcupine draws
	// one row per client). A client whose operation ended Unknown goes on
	// as a new process (Recorder.NewClient), as Jepsen's do: the old one
	// may still be "in" its operation.
	Client int
	Input  Input
	Output Output
	// Call is when the operation was sent; Return when its answer came.
	// Return is ignored for an Unknown output (Check gives it one).
	Call, Return int64
	// Meta says where and how (node, attempts, error): shown in the
	// visualisation, ignored by the model.
	Meta string

	cmd uint64 // the Client's command, when not 0 (Recorder.replace)
}

// Recorder records a history of operations from many goroutines. Every
// method is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu      sync.Mutex
	ops     []Op
	pending map[int]Op
	cmds    map[uint64]bool // commands of the Client recorded (replace)
	nextID  int
	clients int
}

// NewRecorder returns an empty recorder whose clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), pending: map[int]Op{}, cmds: map[uint64]bool{}}
}

// Now is the recorder's clock: nanoseconds since NewRecorder, from Go's
// monotonic clock (wall-clock steps do not move it).
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// NewClient returns a process id no other caller got.
func (r *Recorder) NewClient() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clients
	r.clients++
	return c
}

// Invoke records that client sends in now, and returns the id to give to
// Return. An operation that never returns is Unknown in the history.
func (r *Recorder) Invoke(client int, in Input) int {
	call := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.nextID
	r.nextID++
	r.pending[id] = Op{Client: client, Input: in, Call: call, Output: Output{Result: Unknown}}
	r.noteClient(client)
	return id
}

// Return records the answer to the operation id, now. An unknown id is
// ignored.
func (r *Recorder) Return(id int, out Output, meta string) {
	ret := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	op, ok := r.pending[id]
	if !ok {
		return
	}
	delete(r.pending, id)
	op.Output, op.Return, op.Meta = out, ret, meta
	r.ops = append(r.ops, op)
}

// Add records a whole operation (its times from Now), for callers that
// decide its shape after the fact: the Client merges a command's attempts.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	r.noteClient(op.Client)
}

// replace records ops as the operations of the Client's command cmd (not
// 0), in place of those recorded for it before.
func (r *Recorder) replace(cmd uint64, ops []Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmds[cmd] {
		kept := r.ops[:0]
		for _, op := range r.ops {
			if op.cmd != cmd {
				kept = append(kept, op)
			}
		}
		r.ops = kept
	}
	r.cmds[cmd] = true
	for _, op := range ops {
		op.cmd = cmd
		r.ops = append(r.ops, op)
		r.noteClient(op.Client)
	}
}

func (r *Recorder) noteClient(c int) {
	if c >= r.clients {
		r.clients = c + 1
	}
}

// Ops returns the history so far, ordered by call time: operations still
// in flight are in it as Unknown.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	ops := make([]Op, 0, len(r.ops)+len(r.pending))
	ops = append(ops, r.ops...)
	for _, op := range r.pending {
		ops = append(ops, op)
	}
	r.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Check checks the history so far; see the function Check.
func (r *Recorder) Check(timeout time.Duration, dir string) (porcupine.CheckResult, CheckInfo, error) {
	return Check(r.Ops(), timeout, dir)
}

// CheckInfo describes a check.
type CheckInfo struct {
	// Ops, Accounts and Unknown count the operations checked, the
	// partitions (accounts) and the operations with an Unknown output.
	Ops, Accounts, Unknown int
	// Open counts the Unknown operations whose ref no operation got OK
	// for: open-ended in the history (see Check), they are what makes a
	// check expensive.
	Open int
	// Took is how long the checker ran.
	Took time.Duration
	// Illegal names the accounts whose histories are not linearizable
	// (when the result is Illegal).
	Illegal []string
	// Visualization is the path of porcupine's HTML rendering of the
	// history, written when the result is Illegal and a directory was
	// given: open it in a browser to see the longest linearizable
	// prefixes and the operation that could not be placed.
	Visualization string
	// Linearization is porcupine's detail, for Visualize and friends.
	Linearization porcupine.LinearizationInfo
}

// String summarises the check for a test log.
func (i CheckInfo) String() string {
	s := fmt.Sprintf("%d ops (%d unknown, %d open-ended) on %d accounts, checked in %s", i.Ops, i.Unknown, i.Open, i.Accounts, i.Took.Round(time.Millisecond))
	if len(i.Illegal) > 0 {
		s += fmt.Sprintf("; not linearizable: %v", i.Illegal)
	}
	if i.Visualization != "" {
		s += "; visualisation: " + i.Visualization
	}
	return s
}

// Check checks that ops are linearizable against Model, one account at a
// time (in parallel), for at most timeout (0: no bound). The result is
// porcupine.Ok, Illegal, or Unknown when the timeout passed first (a
// caller should treat that as a failure to check, not as a pass, and give
// each check fewer concurrent operations per account).
//
// Unknown outputs are encoded as porcupine suggests for operations whose
// outcome was not observed: the operation keeps its call time and gets the
// return time "end of the history", one nanosecond after the latest call
// or return of any operation in ops. It is then concurrent with everything
// that came after its call, so the checker may place its effect anywhere
// from its call on, including after every other operation, which is the
// same as not at all. The model accepts any output for it.
//
// Two refinements keep the search small without changing its verdict.
// When an operation with the same account and ref was answered OK, the
// account had applied the ref by that answer's return R, and from then on
// a repeat of the ref has no effect: an Unknown operation called after R
// is left out, and one called before R gets R as its return time (placing
// it later would be the same as placing it just after R). Open-ended
// Unknown operations (refs never acknowledged) are what makes a check
// expensive: each one doubles the orders the checker may have to try.
//
// When the result is Illegal and dir is not empty, Check writes porcupine's
// visualisation into dir and names the file in CheckInfo.Visualization;
// the error is about writing it.
func Check(ops []Op, timeout time.Duration, dir string) (porcupine.CheckResult, CheckInfo, error) {
	info := CheckInfo{Ops: len(ops)}
	model := Model()
	history, open := toPorcupine(ops)
	info.Open = open
	accounts := map[string]bool{}
	for _, op := range ops {
		accounts[op.Input.Account] = true
		if op.Output.Result == Unknown {
			info.Unknown++
		}
	}
	info.Accounts = len(accounts)

	start := time.Now()
	res, lin := porcupine.CheckOperationsVerbose(model, history, timeout)
	info.Took = time.Since(start)
	info.Linearization = lin
	if res != porcupine.Illegal {
		return res, info, nil
	}
	info.Illegal = illegalAccounts(model, ops, timeout)
	if dir == "" {
		return res, info, nil
	}
	f, err := os.CreateTemp(dir, "linearizability-*.html")
	if err != nil {
		return res, info, fmt.Errorf("linear: visualisation: %w", err)
	}
	err = porcupine.Visualize(model, lin, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, info, fmt.Errorf("linear: visualisation: %w", err)
	}
	info.Visualization = f.Name()
	return res, info, nil
}

// illegalAccounts checks each account alone to name those at fault (the
// checker of the whole history stops at the first).
func illegalAccounts(model porcupine.Model, ops []Op, timeout time.Duration) []string {
	by := map[string][]Op{}
	for _, op := range ops {
		by[op.Input.Account] = append(by[op.Input.Account], op)
	}
	var bad []string
	for _, a := range sortedKeys(by) {
		h, _ := toPorcupine(by[a])
		if porcupine.CheckOperationsTimeout(model, h, timeout) == porcupine.Illegal {
			bad = append(bad, a)
		}
	}
	return bad
}

// toPorcupine converts ops, giving Unknown outputs their return times
// (see Check) and leaving out those that cannot have an effect.
func toPorcupine(ops []Op) (history []porcupine.Operation, open int) {
	var end int64
	// acked[account][ref]: the earliest return of an OK operation with the
	// ref: by then the account had applied it.
	acked := map[string]map[string]int64{}
	for _, op := range ops {
		end = max(end, op.Call)
		if op.Output.Result == Unknown {
			continue
		}
		end = max(end, op.Return)
		if op.Output.Result != OK || op.Input.Ref == "" {
			continue
		}
		m := acked[op.Input.Account]
		if m == nil {
			m = map[string]int64{}
			acked[op.Input.Account] = m
		}
		if r, ok := m[op.Input.Ref]; !ok || op.Return < r {
			m[op.Input.Ref] = op.Return
		}
	}
	end++
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		ret := op.Return
		if op.Output.Result == Unknown {
			ret = end
			if by, ok := acked[op.Input.Account][op.Input.Ref]; ok {
				if by < op.Call {
					continue // a repeat of an applied ref: no effect
				}
				ret = by
			} else {
				open++
			}
		}
		var meta any
		if op.Meta != "" || op.Output.Err != "" {
			meta = op.metaString()
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: op.Input, Call: op.Call, Output: op.Output, Return: ret, Metadata: meta})
	}
	return out, open
}

func (op Op) metaString() string {
	switch {
	case op.Meta == "":
		return op.Output.Err
	case op.Output.Err == "":
		return op.Meta
	}
	return op.Meta + "; " + op.Output.Err
}
