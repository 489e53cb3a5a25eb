package membership

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// mergeDelegate refuses a join whose two sides disagree about who holds a
// node id: the other side lists a live member under an id that this side
// knows alive (or leaving) at another address. memberlist calls it on both
// sides of a join's state exchange (never for the periodic push/pull), on
// the joining node inside Join and on the seed in a connection goroutine,
// without holding its locks. Refusing on both sides keeps the existing
// member in place and the newcomer out.
type mergeDelegate struct{ m *Membership }

func (d mergeDelegate) NotifyMerge(peers []*memberlist.Node) error {
	s := d.m.serf.Load()
	if s == nil {
		return errors.New("membership: not started yet")
	}
	known := make(map[string]memberAt)
	for _, sm := range s.Members() {
		known[sm.Name] = memberAt{addr: addrOf(sm.Addr, sm.Port), state: fromSerf(sm.Status)}
	}
	joining := d.m.joining.Load()
	for _, p := range peers {
		var pState State
		switch p.State {
		case memberlist.StateAlive:
			pState = Alive
		case memberlist.StateSuspect:
			pState = Suspect
		default:
			continue // a dead or left entry claims nothing
		}
		k, ok := known[p.Name]
		pAddr := addrOf(p.Addr, p.Port)
		if !ok || k.addr == pAddr || (k.state != Alive && k.state != Leaving) {
			continue // a failed or left id may be taken by a new address
		}
		var c *ConflictError
		if joining {
			// The peers are the cluster's list: p holds the id there.
			c = &ConflictError{ID: p.Name, OtherAddr: pAddr, OtherState: pState, Addr: k.addr}
			d.m.conflictMu.Lock()
			d.m.conflict = c
			d.m.conflictMu.Unlock()
		} else {
			// The peers are a joining node's list: k holds the id here.
			c = &ConflictError{ID: p.Name, OtherAddr: k.addr, OtherState: k.state, Addr: pAddr}
		}
		return c
	}
	return nil
}

type memberAt struct {
	addr  string
	state State
}

// aliveDelegate drops alive messages that claim this node's id from
// another address (two processes configured with one id), and logs the
// first one from each address as an error: memberlist would only ignore
// them. Called by memberlist with its node lock held: it takes only
// seenMu.
type aliveDelegate struct{ m *Membership }

func (d aliveDelegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name != d.m.cfg.NodeID {
		return nil
	}
	l := d.m.local.Load()
	if l == nil || (l.ip.Equal(peer.Addr) && l.port == peer.Port) {
		return nil // our own (l is nil while Start creates serf)
	}
	other := addrOf(peer.Addr, peer.Port)
	d.m.seenMu.Lock()
	first := !d.m.claimed[other]
	d.m.claimed[other] = true
	d.m.seenMu.Unlock()
	if first {
		d.m.log.Error("another process claims this node's id; ignoring it: node ids must be unique",
			"node", d.m.cfg.NodeID, "addr", l.String(), "other", other)
	}
	return fmt.Errorf("membership: node id %q belongs to %s, not %s", peer.Name, l.String(), other)
}

// pingDelegate records when this node's own probes of a member were
// acknowledged (Member.LastHeard); an ack ends our suspicion. Called from memberlist's probe
// goroutine with no lock held.
type pingDelegate struct{ m *Membership }

func (pingDelegate) AckPayload() []byte { return nil }

func (d pingDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	now := time.Now()
	d.m.seenMu.Lock()
	d.m.lastAck[other.Name] = now
	_, cleared := d.m.suspects[other.Name]
	delete(d.m.suspects, other.Name)
	d.m.seenMu.Unlock()
	if cleared {
		d.m.notify()
	}
}
