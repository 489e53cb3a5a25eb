package badgerstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

// The crash test re-executes this test binary as a child process (see
// crashChild) that appends until it is killed.
const (
	envCrashDir   = "TROUPE_JOURNAL_CRASH_DIR"
	envCrashCycle = "TROUPE_JOURNAL_CRASH_CYCLE"
	crashWriters  = 48
	crashShared   = 4
	// crashMemTable makes Badger rotate memtables and flush tables within
	// a few cycles, so recovery runs over tables and several memtables.
	crashMemTable = 8 << 20
)

// crashPad fattens the events for the same reason.
var crashPad = strings.Repeat("p", 600)

// crashChild runs the child side of TestCrash when the environment asks for
// it, and reports whether it did (TestMain then exits).
func crashChild() bool {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		return false
	}
	if err := runCrashChild(dir, os.Getenv(envCrashCycle)); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	return true
}

// runCrashChild appends from many goroutines with SyncAlways and prints one
// line per acknowledged append, written (unbuffered) only after Append
// returned:
//
//	ack <stream> <firstSeq> <lastSeq> <firstPos> <lastPos> <batch> <n>
//
// Every event of a batch has the payload "<batch>:<i>:<n>".
func runCrashChild(dir, cycle string) error {
	memTableSize = crashMemTable
	s, err := Open(Config{Dir: dir, Sync: SyncAlways, MaxAppendBytes: 256 << 10, MaxEventSize: 64 << 10})
	if err != nil {
		return err
	}
	var out sync.Mutex
	emit := func(line string) {
		out.Lock()
		defer out.Unlock()
		os.Stdout.WriteString(line)
	}
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute) // the parent kills us long before
	var wg sync.WaitGroup
	errc := make(chan error, crashWriters)
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			own := fmt.Sprintf("crash/w%d", w)
			info, err := s.Info(ctx, own)
			if err != nil {
				errc <- err
				return
			}
			last := info.LastSequence
			for b := 0; time.Now().Before(deadline); b++ {
				n := 1 + rng.IntN(5)
				batch := fmt.Sprintf("c%s-w%d-b%d", cycle, w, b)
				evs := make([]journal.Event, n)
				for i := range evs {
					evs[i] = journal.Event{Type: "Crashed", Payload: fmt.Appendf(nil, "%s:%d:%d:%s", batch, i, n, crashPad), Tags: []string{"crash"}}
				}
				stream, expected := own, last
				if rng.IntN(4) == 0 {
					stream, expected = fmt.Sprintf("shared/s%d", rng.IntN(crashShared)), journal.ExpectAny
				}
				r, err := s.Append(ctx, journal.AppendRequest{Stream: stream, Expected: expected, Events: evs})
				if err != nil {
					errc <- err
					return
				}
				if stream == own {
					last = r.LastSequence
				}
				emit(fmt.Sprintf("ack %s %d %d %d %d %s %d\n", stream, r.FirstSequence, r.LastSequence, r.FirstPosition, r.LastPosition, batch, n))
			}
		}()
	}
	emit("ready\n")
	wg.Wait()
	close(errc)
	return errors.Join(<-errc, s.Close())
}

type crashAck struct {
	stream            string
	firstSeq, lastSeq uint64
	firstPos, lastPos uint64
	batch             string
	n                 int
}

func parseAck(line string) (crashAck, error) {
	f := strings.Fields(line)
	if len(f) != 8 || f[0] != "ack" {
		return crashAck{}, fmt.Errorf("bad ack line %q", line)
	}
	var a crashAck
	a.stream, a.batch = f[1], f[6]
	nums := make([]uint64, 0, 5)
	for _, s := range []string{f[2], f[3], f[4], f[5], f[7]} {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return crashAck{}, fmt.Errorf("bad ack line %q: %v", line, err)
		}
		nums = append(nums, v)
	}
	a.firstSeq, a.lastSeq, a.firstPos, a.lastPos, a.n = nums[0], nums[1], nums[2], nums[3], int(nums[4])
	return a, nil
}

func crashCycles() int {
	if v, err := strconv.Atoi(os.Getenv("TROUPE_CRASH_CYCLES")); err == nil && v > 0 {
		return v
	}
	if os.Getenv("TROUPE_LONG") != "" {
		return 25
	}
	return 3
}

// TestCrash kills a child process that appends with SyncAlways at random
// moments and checks, after each kill, that every acknowledged append
// survived whole and in order and that the global log has no gap. See the
// package doc for TROUPE_LONG and TROUPE_CRASH_CYCLES.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process crash test")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	defer func(size int64) { memTableSize = size }(memTableSize)
	memTableSize = crashMemTable
	cycles := crashCycles()
	var acked []crashAck
	for cycle := range cycles {
		killAfter := 50 + rand.IntN(1500) // acks before the kill
		acks, stderr := runAndKill(t, exe, dir, cycle, killAfter)
		acked = append(acked, acks...)
		tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
		t.Logf("cycle %d: killed after %d acks (%d in all); %d tables, %d memtables on disk", cycle, len(acks), len(acked), len(tables), len(mems))
		if len(acks) == 0 {
			t.Fatalf("cycle %d: the child acknowledged nothing; stderr:\n%s", cycle, stderr)
		}
		verifyReadOnly(t, dir, acked)
		verifyCrash(t, dir, acked)
	}
}

// runAndKill starts the child, lets it acknowledge killAfter appends, kills
// it with SIGKILL, and returns every ack it printed.
func runAndKill(t *testing.T, exe, dir string, cycle, killAfter int) ([]crashAck, string) {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, fmt.Sprintf("%s=%d", envCrashCycle, cycle))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acks []crashAck
	sc := bufio.NewScanner(stdout)
	killed := false
	timeout := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timeout.Stop()
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			continue
		}
		a, err := parseAck(line)
		if err != nil {
			// A line cut by the kill: it was not wholly printed, so its
			// append does not count as acknowledged here.
			if killed {
				continue
			}
			cmd.Process.Kill()
			t.Fatal(err)
		}
		acks = append(acks, a)
		if !killed && len(acks) >= killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if !killed {
		t.Fatalf("cycle %d: child exited before the kill (%v); stderr:\n%s", cycle, err, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("cycle %d: child ended with %v, not SIGKILL; stderr:\n%s", cycle, err, stderr.String())
	}
	return acks, stderr.String()
}

// verifyCrash reopens the store and checks it against every ack so far.
func verifyCrash(t *testing.T, dir string, acked []crashAck) {
	t.Helper()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	all := journaltest.CheckGlobalLog(t, s)
	// Every batch in the log is whole and contiguous.
	type seen struct {
		n, count       int
		stream         string
		firstSeq, next uint64
		firstPos       uint64
	}
	batches := map[string]*seen{}
	for _, e := range all {
		var batch string
		var i, n int
		parts := strings.Split(string(e.Payload), ":")
		if len(parts) != 4 || parts[3] != crashPad {
			t.Fatalf("position %d: payload %q", e.Position, e.Payload)
		}
		batch = parts[0]
		i, _ = strconv.Atoi(parts[1])
		n, _ = strconv.Atoi(parts[2])
		b := batches[batch]
		if b == nil {
			if i != 0 {
				t.Fatalf("batch %s starts at event %d (position %d): partial batch", batch, i, e.Position)
			}
			b = &seen{n: n, stream: e.Stream, firstSeq: e.Sequence, next: e.Sequence, firstPos: e.Position}
			batches[batch] = b
		}
		if i != b.count || e.Stream != b.stream || e.Sequence != b.next || e.Position != b.firstPos+uint64(i) {
			t.Fatalf("batch %s: event %d at %s/%d position %d breaks the batch %+v", batch, i, e.Stream, e.Sequence, e.Position, *b)
		}
		b.count++
		b.next++
	}
	for name, b := range batches {
		if b.count != b.n {
			t.Fatalf("batch %s: %d of %d events present: partial batch", name, b.count, b.n)
		}
	}
	// Every acknowledged append is there, where its ack said.
	for _, a := range acked {
		b := batches[a.batch]
		if b == nil {
			t.Fatalf("acknowledged batch %s (%s %d-%d, positions %d-%d) is lost", a.batch, a.stream, a.firstSeq, a.lastSeq, a.firstPos, a.lastPos)
		}
		if b.stream != a.stream || b.firstSeq != a.firstSeq || b.firstPos != a.firstPos || uint64(b.n) != a.lastSeq-a.firstSeq+1 || a.lastPos-a.firstPos+1 != uint64(a.n) {
			t.Fatalf("acknowledged batch %s %+v is stored as %+v", a.batch, a, *b)
		}
	}
	// Streams are gap-free and the counters agree.
	var events uint64
	for stream, err := range s.Streams(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		evs := journaltest.Collect(t, s.Read(ctx, stream, 0, 0))
		for i, e := range evs {
			if e.Sequence != uint64(i+1) {
				t.Fatalf("stream %s: event %d has sequence %d", stream, i, e.Sequence)
			}
		}
		info, err := s.Info(ctx, stream)
		if err != nil || info.LastSequence != uint64(len(evs)) || info.Count != uint64(len(evs)) {
			t.Fatalf("stream %s: info %+v for %d events (%v)", stream, info, len(evs), err)
		}
		events += uint64(len(evs))
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Events != events || len(st.Heads) != 1 || st.Heads[0] != uint64(len(all)) {
		t.Fatalf("stats %+v, counted %d events, log of %d (%v)", st, events, len(all), err)
	}
	if tagged := journaltest.Collect(t, s.ReadAll(ctx, 0, 0, journal.Filter{Tag: "crash"}, 0)); len(tagged) != len(all) {
		t.Fatalf("tag index holds %d of %d events", len(tagged), len(all))
	}
}

// verifyReadOnly opens the killed store read-only, as the CLI does with a
// stopped node's directory, and checks that the acknowledged appends are
// readable.
func verifyReadOnly(t *testing.T, dir string, acked []crashAck) {
	t.Helper()
	if _, err := Open(Config{Dir: dir, ReadOnly: true}); !errors.Is(err, ErrNeedsRecovery) {
		t.Fatalf("read-only open after kill: %v, want ErrNeedsRecovery", err)
	}
	s, err := Open(Config{Dir: dir, ReadOnly: true, RecoverReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open after kill, with recovery: %v", err)
	}
	defer s.Close()
	var maxPos uint64
	for _, a := range acked {
		maxPos = max(maxPos, a.lastPos)
	}
	if s.LastPosition(0) < maxPos {
		t.Fatalf("read-only open sees position %d, acknowledged %d", s.LastPosition(0), maxPos)
	}
	journaltest.CheckGlobalLog(t, s)
}
