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
	// Return is ignored for an Unknown output (see Check).
	Call, Return int64
	// Meta says where and how (node, attempts, error): shown in the
	// visualisation, ignored by the model.
	Meta string
}

// Recorder records a history of operations from many goroutines. Every
// method is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu      sync.Mutex
	ops     []Op
	pending map[int]Op
	nextID  int
	clients int
}

// NewRecorder returns an empty recorder whose clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), pending: map[int]Op{}}
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
	s := fmt.Sprintf("%d ops (%d unknown) on %d accounts, checked in %s", i.Ops, i.Unknown, i.Accounts, i.Took.Round(time.Millisecond))
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
// When the result is Illegal and dir is not empty, Check writes porcupine's
// visualisation into dir and names the file in CheckInfo.Visualization;
// the error is about writing it.
func Check(ops []Op, timeout time.Duration, dir string) (porcupine.CheckResult, CheckInfo, error) {
	info := CheckInfo{Ops: len(ops)}
	model := Model()
	history := toPorcupine(ops)
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
		if porcupine.CheckOperationsTimeout(model, toPorcupine(by[a]), timeout) == porcupine.Illegal {
			bad = append(bad, a)
		}
	}
	return bad
}

// toPorcupine converts ops, giving Unknown outputs the end of the history
// as their return time (see Check).
func toPorcupine(ops []Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Call)
		if op.Output.Result != Unknown {
			end = max(end, op.Return)
		}
	}
	end++
	out := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		ret := op.Return
		if op.Output.Result == Unknown {
			ret = end
		}
		var meta any
		if op.Meta != "" || op.Output.Err != "" {
			meta = op.metaString()
		}
		out[i] = porcupine.Operation{ClientId: op.Client, Input: op.Input, Call: op.Call, Output: op.Output, Return: ret, Metadata: meta}
	}
	return out
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
