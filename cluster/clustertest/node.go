package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node is one troupe process of a Cluster: its identity, directory and
// addresses, which stay the same across restarts, and its current run.
// Its methods are safe for concurrent use.
type Node struct {
	// Index is the node's position in the cluster, 0-based.
	Index int
	// ID is the node id: "n1", "n2", ... (Index + 1).
	ID string
	// DataDir is the node's data directory, under the test's TempDir.
	DataDir string
	// IP is the node's address: 127.0.0.1 without namespaces, 10.x.y.z
	// inside its own namespace otherwise.
	IP string
	// The node's ports. Without namespaces they are free ports picked at
	// New; inside namespaces they are fixed (8080, 4222, 7946, 6222).
	HTTPPort, NATSPort, GossipPort, RoutePort int
	// Netns is the name of the node's network namespace ("" without).
	Netns string
	// Args, when set, is this node's whole command line (without the
	// binary), in place of Options.Args and Options.ExtraArgs: for a node
	// that must differ from the others (a wrong key, another id). Set it
	// before the node starts.
	Args func(n *Node) []string

	c   *Cluster
	log *logBuffer

	mu   sync.Mutex
	run  *run // the current or last run; nil before the first start
	runs int
}

// run is one process of a node, from start to exit.
type run struct {
	cmd   *exec.Cmd
	pid   int
	no    int           // 1 for the node's first run
	ready chan struct{} // closed when the node logged ReadyMsg
	done  chan struct{} // closed once the process has exited and its output is read
	// Set before done is closed.
	state   *os.ProcessState
	waitErr error
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *run) exitCode() int {
	if r.state == nil {
		return -1
	}
	return r.state.ExitCode()
}

// HTTPAddr is the API's host:port.
func (n *Node) HTTPAddr() string { return net.JoinHostPort(n.IP, strconv.Itoa(n.HTTPPort)) }

// HTTPURL is the base URL of the node's API, /healthz and /metrics.
func (n *Node) HTTPURL() string { return "http://" + n.HTTPAddr() }

// NATSURL is the node's NATS client URL.
func (n *Node) NATSURL() string {
	return "nats://" + net.JoinHostPort(n.IP, strconv.Itoa(n.NATSPort))
}

// GossipAddr is the node's gossip (serf) address, the form --join takes.
func (n *Node) GossipAddr() string { return net.JoinHostPort(n.IP, strconv.Itoa(n.GossipPort)) }

// RouteAddr is the node's NATS cluster (route) address.
func (n *Node) RouteAddr() string { return net.JoinHostPort(n.IP, strconv.Itoa(n.RoutePort)) }

// Start starts the node's process (same directory and ports every time) and
// returns once it logged ReadyMsg. If the process exits first, or is not
// ready within Options.ReadyTimeout (then it is killed), the error is a
// *StartError with the tail of the log.
func (n *Node) Start() error {
	r, err := n.start()
	if err != nil {
		return err
	}
	timer := time.NewTimer(n.c.opts.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-r.ready:
		return nil
	case <-r.done:
		return &StartError{Node: n.ID, Err: exitError(r), Log: tail(n.Log(), 30)}
	case <-timer.C:
		n.Kill()
		return &StartError{Node: n.ID, Err: fmt.Errorf("not ready after %s (killed)", n.c.opts.ReadyTimeout), Log: tail(n.Log(), 30)}
	}
}

// StartNoWait starts the node's process and returns at once, for tests of
// nodes that must be refused or fail; see Wait and WaitLog.
func (n *Node) StartNoWait() error {
	_, err := n.start()
	return err
}

func (n *Node) start() (*run, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.run != nil && !n.run.exited() {
		return nil, fmt.Errorf("%w: %s (pid %d)", ErrRunning, n.ID, n.run.pid)
	}
	args := n.c.args(n)
	var cmd *exec.Cmd
	if n.Netns != "" {
		cmd = exec.Command(ipPath, append([]string{"netns", "exec", n.Netns, n.c.bin}, args...)...)
	} else {
		cmd = exec.Command(n.c.bin, args...)
	}
	cmd.Env = append(os.Environ(), n.c.opts.Env...)
	// The kernel kills the node if the test process dies without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("clustertest: start %s: %w", n.ID, err)
	}
	pw.Close()
	n.runs++
	r := &run{cmd: cmd, pid: cmd.Process.Pid, no: n.runs, ready: make(chan struct{}), done: make(chan struct{})}
	n.run = r
	// The separator goes in before the reader starts, so it precedes the
	// run's output.
	n.log.beginRun(fmt.Sprintf("===== clustertest: %s run %d, pid %d, %s: %s =====",
		n.ID, r.no, r.pid, time.Now().Format("15:04:05.000"), strings.Join(cmd.Args, " ")))
	n.c.procs.Add(1)
	go n.own(r, pr)
	return r, nil
}

// own is the run's owner goroutine: it copies the output into the log,
// reaps the process and closes done. It ends when the process has exited.
func (n *Node) own(r *run, pr *os.File) {
	defer n.c.procs.Done()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		w := &lineWriter{log: n.log, onReady: func() { close(r.ready) }}
		buf := make([]byte, 32<<10)
		for {
			k, err := pr.Read(buf)
			w.Write(buf[:k])
			if err != nil {
				break
			}
		}
		w.flush()
	}()
	err := r.cmd.Wait()
	// A grandchild holding the pipe open must not hold the run open.
	timer := time.NewTimer(5 * time.Second)
	select {
	case <-copied:
	case <-timer.C:
		pr.Close()
		<-copied
	}
	timer.Stop()
	pr.Close()
	r.state, r.waitErr = r.cmd.ProcessState, err
	n.log.appendLine(fmt.Sprintf("===== clustertest: %s run %d (pid %d) ended: %s =====", n.ID, r.no, r.pid, r.cmd.ProcessState))
	close(r.done)
}

func exitError(r *run) error {
	if r.waitErr != nil {
		return fmt.Errorf("exited before ready: %w", r.waitErr)
	}
	return errors.New("exited before ready with status 0")
}

// current returns the current run, or nil if the node is not running.
func (n *Node) current() *run {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.run == nil || n.run.exited() {
		return nil
	}
	return n.run
}

// killWait bounds the wait for a process after SIGKILL.
const killWait = 30 * time.Second

// Kill sends SIGKILL (kill -9) to the node's process and waits until it has
// exited. It does nothing when the node is not running.
func (n *Node) Kill() {
	r := n.current()
	if r == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL) // os.Process signals through a pidfd: never another process
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-r.done:
	case <-timer.C:
		n.c.t.Errorf("clustertest: %s (pid %d) still running %s after SIGKILL", n.ID, r.pid, killWait)
	}
}

// Term sends SIGTERM and waits, at most Options.TermTimeout, for the
// process to exit. It returns the exit code (-1 when a signal ended it) and
// how long the exit took. On timeout it kills the process and returns
// ErrTermTimeout; when the node is not running, ErrNotRunning.
func (n *Node) Term() (exitCode int, took time.Duration, err error) {
	r := n.current()
	if r == nil {
		return -1, 0, fmt.Errorf("%w: %s", ErrNotRunning, n.ID)
	}
	start := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, 0, fmt.Errorf("clustertest: SIGTERM %s: %w", n.ID, err)
	}
	timer := time.NewTimer(n.c.opts.TermTimeout)
	defer timer.Stop()
	select {
	case <-r.done:
		return r.exitCode(), time.Since(start), nil
	case <-timer.C:
		took := time.Since(start)
		n.Kill()
		return -1, took, fmt.Errorf("%w: %s after %s", ErrTermTimeout, n.ID, took)
	}
}

// Restart kills the node if it runs, then starts it again (Start).
func (n *Node) Restart() error {
	n.Kill()
	return n.Start()
}

// Running reports whether the node's process is running.
func (n *Node) Running() bool { return n.current() != nil }

// PID is the pid of the running process, or 0.
func (n *Node) PID() int {
	if r := n.current(); r != nil {
		return r.pid
	}
	return 0
}

// Log returns everything the node printed (stdout and stderr, in order of
// arrival) over all its runs; a separator line marks each start and exit.
func (n *Node) Log() string { return n.log.String() }

// WaitLog waits until the node's current (or last) run has printed substr.
// It returns an error when the run ends without printing it, or when ctx
// ends; without a deadline on ctx, ReadyTimeout bounds the wait.
func (n *Node) WaitLog(ctx context.Context, substr string) error {
	ctx, cancel := n.c.bound(ctx)
	defer cancel()
	n.mu.Lock()
	r := n.run
	n.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: %s never started", ErrNotRunning, n.ID)
	}
	for {
		// Read exit before the log: the whole output is in once done is closed.
		exited := r.exited()
		found, changed := n.log.current(substr)
		switch {
		case found:
			return nil
		case exited:
			return fmt.Errorf("clustertest: %s exited (%s) without logging %q", n.ID, r.state, substr)
		}
		select {
		case <-changed:
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("clustertest: %s: waiting for %q in its log: %w", n.ID, substr, ctx.Err())
		}
	}
}

// Wait waits until the node's current (or last) run has exited and returns
// its exit code (-1 when a signal ended it). Without a deadline on ctx,
// ReadyTimeout bounds the wait.
func (n *Node) Wait(ctx context.Context) (exitCode int, err error) {
	ctx, cancel := n.c.bound(ctx)
	defer cancel()
	n.mu.Lock()
	r := n.run
	n.mu.Unlock()
	if r == nil {
		return -1, fmt.Errorf("%w: %s never started", ErrNotRunning, n.ID)
	}
	select {
	case <-r.done:
		return r.exitCode(), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("clustertest: waiting for %s (pid %d) to exit: %w", n.ID, r.pid, ctx.Err())
	}
}
