package bus

import (
	"strings"
	"testing"
	"time"
)

func TestParseElectionTimeout(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi time.Duration
		bad    bool
	}{
		{in: "", lo: ElectionTimeoutMin, hi: ElectionTimeoutMax},
		{in: "4s-9s", lo: 4 * time.Second, hi: 9 * time.Second},
		{in: " 1500ms - 3s ", lo: 1500 * time.Millisecond, hi: 3 * time.Second},
		{in: "4s", bad: true},
		{in: "9s-4s", bad: true},
		{in: "4s-4s", bad: true},
		{in: "100ms-1s", bad: true},
		{in: "1s-10m", bad: true},
		{in: "a-b", bad: true},
		{in: "-", bad: true},
	} {
		lo, hi, err := parseElectionTimeout(tc.in)
		switch {
		case tc.bad && (err == nil || !strings.Contains(err.Error(), ElectionTimeoutEnv)):
			t.Errorf("%q: %v, %v, %v; want an error naming %s", tc.in, lo, hi, err, ElectionTimeoutEnv)
		case !tc.bad && (err != nil || lo != tc.lo || hi != tc.hi):
			t.Errorf("%q: %v, %v, %v; want %v, %v", tc.in, lo, hi, err, tc.lo, tc.hi)
		}
	}
	// The process runs with the range set (the test binary has no
	// override in its environment).
	if lo, hi := RaftElectionTimeout(); lo != ElectionTimeoutMin || hi != ElectionTimeoutMax {
		t.Fatalf("running with %v-%v", lo, hi)
	}
}
