package bus

import (
	"fmt"
	"os"
	"strings"
	"time"
	_ "unsafe" // go:linkname: JetStream's Raft election timeout has no option
)

// The embedded server's Raft election timeout. A follower that hears
// nothing from its group's leader for a random time between the two starts
// an election; the leader heartbeats every second. nats-server fixes them
// at 4 and 9 s and exports no option, so a node that dies while leading a
// shard's stream (or the lease bucket) stalls it for 4-9 s, which made our
// failover median 7-8 s. Troupe sets them to ElectionTimeoutMin and
// ElectionTimeoutMax when the package is initialised, before any server
// starts (docs/adr/0018-raft-election-timeout.md). If a nats-server upgrade
// renames them, the build fails to link: then drop this file or follow the
// rename; nothing else depends on it.
//
//go:linkname raftMinElectionTimeout github.com/nats-io/nats-server/v2/server.minElectionTimeout
var raftMinElectionTimeout time.Duration

//go:linkname raftMaxElectionTimeout github.com/nats-io/nats-server/v2/server.maxElectionTimeout
var raftMaxElectionTimeout time.Duration

// The election timeout Troupe runs JetStream's Raft groups with: at least
// two missed heartbeats (one per second) before a follower campaigns, so
// that a busy but live leader is not voted out, and at most 4 s, so that a
// dead leader is replaced in about 2-4.5 s rather than 4-9.5 s.
const (
	ElectionTimeoutMin = 2 * time.Second
	ElectionTimeoutMax = 4 * time.Second
)

// ElectionTimeoutEnv overrides the range for the whole process, as
// "MIN-MAX" (for example "4s-9s", nats-server's own): for a cluster over
// a slow network, and to compare. It is read once, at start-up; a value
// that does not parse makes New fail with an error that names it.
const ElectionTimeoutEnv = "TROUPE_RAFT_ELECTION_TIMEOUT"

// electionTimeoutErr is what ElectionTimeoutEnv's value did not parse as.
var electionTimeoutErr error

func init() {
	lo, hi, err := parseElectionTimeout(os.Getenv(ElectionTimeoutEnv))
	if err != nil {
		electionTimeoutErr = err
		return
	}
	raftMinElectionTimeout, raftMaxElectionTimeout = lo, hi
}

// parseElectionTimeout parses ElectionTimeoutEnv's value; "" is the
// default range.
func parseElectionTimeout(v string) (lo, hi time.Duration, err error) {
	if v == "" {
		return ElectionTimeoutMin, ElectionTimeoutMax, nil
	}
	a, b, ok := strings.Cut(v, "-")
	if ok {
		lo, err = time.ParseDuration(strings.TrimSpace(a))
		if err == nil {
			hi, err = time.ParseDuration(strings.TrimSpace(b))
		}
	}
	if !ok || err != nil || lo < time.Second || hi <= lo || hi > 5*time.Minute {
		return 0, 0, fmt.Errorf("bus: %s=%q: want MIN-MAX durations with 1s <= MIN < MAX <= 5m, like %s-%s", ElectionTimeoutEnv, v, ElectionTimeoutMin, ElectionTimeoutMax)
	}
	return lo, hi, nil
}

// RaftElectionTimeout reports the election timeout range the embedded
// servers of this process use.
func RaftElectionTimeout() (lo, hi time.Duration) {
	return raftMinElectionTimeout, raftMaxElectionTimeout
}
