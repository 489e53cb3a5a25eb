package membership

import (
	"time"

	"github.com/hashicorp/serf/serf"
)

// State is a member's state as this node sees it.
type State int

const (
	// Unknown is the zero State: no view yet (before Start).
	Unknown State = iota
	// Alive: the member answers probes.
	Alive
	// Suspect: a probe of the member failed and memberlist suspects it;
	// unless it refutes, it becomes Failed after the suspicion timeout.
	// serf itself still reports such a member alive.
	Suspect
	// Leaving: the member announced that it leaves.
	Leaving
	// Left: the member left gracefully.
	Left
	// Failed: the member stopped answering and was declared dead.
	Failed
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Leaving:
		return "leaving"
	case Left:
		return "left"
	case Failed:
		return "failed"
	default:
		return "unknown"
	}
}

// fromSerf maps serf's status; Suspect comes from memberlist separately.
func fromSerf(s serf.MemberStatus) State {
	switch s {
	case serf.StatusAlive:
		return Alive
	case serf.StatusLeaving:
		return Leaving
	case serf.StatusLeft:
		return Left
	case serf.StatusFailed:
		return Failed
	default:
		return Unknown
	}
}

// Member is one member of the cluster as this node sees it. It is a copy:
// changing it changes nothing.
type Member struct {
	ID    string // the member's node id (serf node name)
	Addr  string // gossip address, host:port
	State State
	Tags  map[string]string // a copy
	// LastHeard is the last time this node had evidence that the member
	// was alive: an ack to this node's own probe of it, or the news that
	// it joined, came back or changed its tags. Gossip that merely repeats
	// old news does not count. For this node itself it is the time of the
	// call. The zero time means no evidence yet (a member known only from
	// another member's list that this node has not probed).
	LastHeard time.Time
}
