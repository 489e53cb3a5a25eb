package linear

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"connectrpc.com/connect"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// StreamEvent is one event of an account's stream, as EventService.Read
// returns it.
type StreamEvent struct {
	Stream   string
	Sequence uint64
	Type     string
	// Payload is the event as JSON: {"amount": N, "ref": "..."} for
	// Deposited and Withdrawn.
	Payload json.RawMessage
}

// ReadStream reads every event of stream ("account/<id>") from the node
// at baseURL with EventService.Read (Connect, server streaming): what
// `troupe events replay --stream account/<id>` prints. A stream that does
// not exist has no events. Ask a node whose journal holds the stream: on
// a single node, that node; in a cluster, the shard's owner.
func ReadStream(ctx context.Context, hc *http.Client, baseURL, stream string) ([]StreamEvent, error) {
	cl := troupev1connect.NewEventServiceClient(hc, baseURL)
	rs, err := cl.Read(ctx, connect.NewRequest(&troupev1.ReadRequest{Stream: stream}))
	if err != nil {
		return nil, fmt.Errorf("linear: read %s from %s: %w", stream, baseURL, err)
	}
	defer rs.Close()
	var out []StreamEvent
	for rs.Receive() {
		e := rs.Msg().GetEvent()
		out = append(out, StreamEvent{Stream: e.GetStreamId(), Sequence: e.GetSequence(), Type: e.GetType(), Payload: e.GetPayload()})
	}
	if err := rs.Err(); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return nil, fmt.Errorf("linear: read %s from %s: %w", stream, baseURL, err)
	}
	return out, nil
}

// ReadStreams reads the streams of accounts (ids, as Client.Accounts
// returns them) from the node at baseURL, by account id.
func ReadStreams(ctx context.Context, hc *http.Client, baseURL string, accounts []string) (map[string][]StreamEvent, error) {
	out := make(map[string][]StreamEvent, len(accounts))
	for _, a := range accounts {
		evs, err := ReadStream(ctx, hc, baseURL, "account/"+a)
		if err != nil {
			return nil, err
		}
		out[a] = evs
	}
	return out, nil
}

// AuditReport is what Audit found. Each problem is a line naming the
// account and the ref.
type AuditReport struct {
	// Accounts, Applied and Acknowledged count the accounts audited, the
	// Deposited and Withdrawn events in their streams, and the refs the
	// client was told took effect.
	Accounts, Applied, Acknowledged int
	// Lost: refs acknowledged to the client and absent from the stream.
	Lost []string
	// Doubled: refs applied more than once.
	Doubled []string
	// Phantom: events the history cannot explain: a ref no operation
	// sent, an amount or direction other than the one sent, or a ref every
	// request of which was definitely rejected.
	Phantom []string
	// Balances is each account's balance by its events.
	Balances map[string]int64
}

// String summarises r for a test log.
func (r AuditReport) String() string {
	return fmt.Sprintf("%d accounts, %d money events, %d acknowledged: %d lost, %d doubled, %d phantom",
		r.Accounts, r.Applied, r.Acknowledged, len(r.Lost), len(r.Doubled), len(r.Phantom))
}

// AuditError is the error of an audit that found problems.
type AuditError struct{ Report AuditReport }

func (e *AuditError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "linear: audit: %s", e.Report)
	for _, l := range [][]string{e.Report.Lost, e.Report.Doubled, e.Report.Phantom} {
		for i, p := range l {
			if i == 10 {
				fmt.Fprintf(&b, "\n  ... and %d more", len(l)-10)
				break
			}
			b.WriteString("\n  " + p)
		}
	}
	return b.String()
}

// Err returns an *AuditError when r found a problem, nil otherwise.
func (r AuditReport) Err() error {
	if len(r.Lost)+len(r.Doubled)+len(r.Phantom) == 0 {
		return nil
	}
	return &AuditError{Report: r}
}

// sent is what the history says about one ref of one account.
type sent struct {
	kind      OpKind // Read counts as Deposit
	amount    int64
	acked     bool // some operation with the ref answered OK
	undecided bool // some operation with the ref ended Unknown
}

// Audit compares the accounts' event streams (by account id, as
// ReadStreams returns them) with the history ops: "0 acknowledged lost"
// (every ref some operation got OK for is in its account's stream), "0
// applied twice" (no ref is in a stream twice), and no phantom (every
// Deposited or Withdrawn event matches a ref the history sent, with its
// amount and direction, and not one that was only ever rejected). Every
// account of ops is audited; one missing from events has an empty stream.
func Audit(ops []Op, events map[string][]StreamEvent) AuditReport {
	refs := map[string]map[string]*sent{}
	for _, op := range ops {
		in := op.Input
		if in.Ref == "" {
			continue
		}
		m := refs[in.Account]
		if m == nil {
			m = map[string]*sent{}
			refs[in.Account] = m
		}
		kind := in.Kind
		if kind == Read {
			kind = Deposit
		}
		s := m[in.Ref]
		if s == nil {
			s = &sent{kind: kind, amount: in.Amount}
			m[in.Ref] = s
		}
		switch op.Output.Result {
		case OK:
			s.acked = true
		case Unknown:
			s.undecided = true
		}
	}
	accounts := map[string]bool{}
	for a := range refs {
		accounts[a] = true
	}
	for a := range events {
		accounts[a] = true
	}

	r := AuditReport{Accounts: len(accounts), Balances: map[string]int64{}}
	for _, a := range sortedKeys(accounts) {
		seen := map[string][]uint64{}
		var balance int64
		for _, ev := range events[a] {
			var kind OpKind
			switch ev.Type {
			case "Deposited":
				kind = Deposit
			case "Withdrawn":
				kind = Withdraw
			default:
				continue
			}
			var p struct {
				Amount int64  `json:"amount"`
				Ref    string `json:"ref"`
			}
			if err := json.Unmarshal(ev.Payload, &p); err != nil {
				r.Phantom = append(r.Phantom, fmt.Sprintf("%s seq %d: %s payload does not decode: %v", a, ev.Sequence, ev.Type, err))
				continue
			}
			r.Applied++
			if kind == Deposit {
				balance += p.Amount
			} else {
				balance -= p.Amount
			}
			seen[p.Ref] = append(seen[p.Ref], ev.Sequence)
			s := refs[a][p.Ref]
			switch {
			case s == nil:
				r.Phantom = append(r.Phantom, fmt.Sprintf("%s ref %q (seq %d): %s %d that no operation sent", a, p.Ref, ev.Sequence, ev.Type, p.Amount))
			case s.kind != kind || s.amount != p.Amount:
				r.Phantom = append(r.Phantom, fmt.Sprintf("%s ref %q (seq %d): %s %d, but the client sent %s %d", a, p.Ref, ev.Sequence, ev.Type, p.Amount, s.kind, s.amount))
			case !s.acked && !s.undecided:
				r.Phantom = append(r.Phantom, fmt.Sprintf("%s ref %q (seq %d): applied, but every request was rejected", a, p.Ref, ev.Sequence))
			}
		}
		r.Balances[a] = balance
		for _, ref := range sortedKeys(seen) {
			if seqs := seen[ref]; len(seqs) > 1 {
				r.Doubled = append(r.Doubled, fmt.Sprintf("%s ref %q: applied %d times (sequences %v)", a, ref, len(seqs), seqs))
			}
		}
		for _, ref := range sortedKeys(refs[a]) {
			if !refs[a][ref].acked {
				continue
			}
			r.Acknowledged++
			if len(seen[ref]) == 0 {
				r.Lost = append(r.Lost, fmt.Sprintf("%s ref %q: acknowledged, not in the stream", a, ref))
			}
		}
	}
	sort.Strings(r.Phantom)
	return r
}
