package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

const (
	// Join's back-off between rounds over the seeds: doubling, with
	// +-20% jitter so that nodes started together do not retry in step.
	joinBackoffMin = 100 * time.Millisecond
	joinBackoffMax = 5 * time.Second

	// eventBuffer is the capacity of the channel serf delivers events on.
	// serf sends on it while holding its member lock and memberlist's node
	// lock, so it must never be full: the buffer absorbs bursts and the
	// stragglers that serf's goroutines may send after Shutdown returns,
	// when nobody reads any more.
	eventBuffer = 1024

	// deadNodeReclaim lets a member at a new address take the id of a
	// failed member at once (memberlist's DeadNodeReclaimTime; zero would
	// mean never). See the ADR on membership timers.
	deadNodeReclaim = time.Nanosecond
)

// Membership is this node's membership in a serf cluster. Its methods are
// safe for concurrent use.
//
// Lock order: joinMu, tagsMu, mu, then conflictMu or seenMu (leaves).
type Membership struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex // guards started, closed, leaveDone, leaveErr
	started   bool
	closed    bool
	leaveDone chan struct{} // closed when serf's Leave returned; nil before Leave
	leaveErr  error

	serf  atomic.Pointer[serf.Serf] // set once by Start
	local atomic.Pointer[hostPort]  // our advertised address, set by Start

	events  chan serf.Event
	changed chan struct{} // capacity 1: an OnChange call is due
	closing chan struct{} // closed first thing in Close: ends Join's back-off
	stop    chan struct{} // closed after serf shut down: ends our goroutines
	wg      sync.WaitGroup

	joinMu     sync.Mutex  // one Join at a time
	joining    atomic.Bool // our Join is inside serf's Join
	conflictMu sync.Mutex
	conflict   *ConflictError // found by the merge delegate during our Join

	tagsMu sync.Mutex // serf's SetTags writes its config unguarded: one at a time

	seenMu   sync.Mutex
	lastAck  map[string]time.Time // last ack to our own probe, by member id
	lastNews map[string]time.Time // last join or update event, by member id
	suspects map[string]time.Time // our probe of the member failed at; cleared by an ack or news
	claimed  map[string]bool      // other addresses seen claiming our id (logged once)
}

type hostPort struct {
	ip   net.IP
	port uint16
}

func (h *hostPort) String() string {
	return net.JoinHostPort(h.ip.String(), strconv.Itoa(int(h.port)))
}

func addrOf(ip net.IP, port uint16) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

// New applies the defaults to cfg, validates it and returns a Membership
// that is not started yet.
func New(cfg Config) (*Membership, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Membership{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "serf"),
		events:   make(chan serf.Event, eventBuffer),
		changed:  make(chan struct{}, 1),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
		lastAck:  make(map[string]time.Time),
		lastNews: make(map[string]time.Time),
		suspects: make(map[string]time.Time),
		claimed:  make(map[string]bool),
	}, nil
}

// Start creates the serf member and returns once it listens on its gossip
// address (see Addr). It joins nobody: call Join.
func (m *Membership) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.started {
		return errors.New("membership: already started")
	}
	sc, err := m.serfConfig(ctx)
	if err != nil {
		return err
	}
	s, err := serf.Create(sc)
	if err != nil {
		return fmt.Errorf("membership: start gossip on %s: %w", m.cfg.BindAddr, err)
	}
	lm := s.LocalMember()
	m.local.Store(&hostPort{ip: lm.Addr, port: lm.Port})
	m.serf.Store(s)
	m.started = true

	m.wg.Add(1)
	go m.run()
	if m.cfg.OnChange != nil {
		m.wg.Add(1)
		go m.notifier()
	}
	m.log.Info("gossip listening", "addr", m.Addr(),
		"encrypted", len(m.cfg.Key) > 0)
	return nil
}

// serfConfig translates our Config into serf's and memberlist's.
func (m *Membership) serfConfig(ctx context.Context) (*serf.Config, error) {
	t := m.cfg.Timers
	ml := memberlist.DefaultLANConfig()
	bindIP, bindPort, err := resolve(ctx, m.cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("membership: BindAddr: %w", err)
	}
	ml.BindAddr, ml.BindPort = bindIP, bindPort
	ml.AdvertiseAddr, ml.AdvertisePort = "", bindPort
	if m.cfg.AdvertiseAddr != "" {
		ip, port, err := resolve(ctx, m.cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("membership: AdvertiseAddr: %w", err)
		}
		ml.AdvertiseAddr, ml.AdvertisePort = ip, port
	}
	if len(m.cfg.Key) > 0 {
		kr, err := memberlist.NewKeyring(nil, m.cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("membership: gossip key: %w", err)
		}
		ml.Keyring = kr
	}
	ml.ProbeInterval = t.ProbeInterval
	ml.ProbeTimeout = t.ProbeTimeout
	ml.SuspicionMult = t.SuspicionMult
	ml.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	ml.GossipInterval = t.GossipInterval
	ml.GossipNodes = t.GossipNodes
	ml.RetransmitMult = t.RetransmitMult
	ml.PushPullInterval = t.PushPullInterval
	ml.TCPTimeout = t.StreamTimeout
	ml.GossipToTheDeadTime = t.GossipToTheDead
	ml.DeadNodeReclaimTime = deadNodeReclaim
	// serf leaves these three alone when its own Merge is nil and
	// coordinates are off; they refuse id conflicts at join time and
	// record probe acks (LastHeard).
	ml.Merge = mergeDelegate{m}
	ml.Alive = aliveDelegate{m}
	ml.Ping = pingDelegate{m}
	logger := newStdLogger(m.log, m.probeFailed)
	ml.LogOutput, ml.Logger = nil, logger

	sc := serf.DefaultConfig()
	sc.NodeName = m.cfg.NodeID
	sc.Tags = copyTags(m.cfg.Tags)
	sc.EventCh = m.events
	sc.MemberlistConfig = ml
	sc.LogOutput, sc.Logger = nil, logger
	sc.BroadcastTimeout = t.BroadcastTimeout
	sc.LeavePropagateDelay = t.LeavePropagateDelay
	sc.ReapInterval = t.ReapInterval
	sc.ReconnectInterval = t.ReconnectInterval
	sc.ReconnectTimeout = m.cfg.ReapFailedAfter
	sc.TombstoneTimeout = m.cfg.ReapLeftAfter
	// serf's vote on a name conflict shuts the loser down, and with two
	// members it shuts both down; we refuse the newcomer at join instead.
	sc.EnableNameConflictResolution = false
	// Network coordinates are unused; turning them off also leaves
	// memberlist's ping delegate to us.
	sc.DisableCoordinates = true
	sc.CoalescePeriod, sc.QuiescentPeriod = 0, 0
	sc.UserCoalescePeriod, sc.UserQuiescentPeriod = 0, 0
	sc.SnapshotPath = ""
	return sc, nil
}

// resolve splits "host:port" and resolves the host to one IP (IPv4 first).
func resolve(ctx context.Context, addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), port, nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", 0, err
	}
	for _, ip := range ips {
		if ip.IP.To4() != nil {
			return ip.IP.String(), port, nil
		}
	}
	if len(ips) == 0 {
		return "", 0, fmt.Errorf("%s resolves to no address", host)
	}
	return ips[0].IP.String(), port, nil
}

// running returns the serf member, or why there is none.
func (m *Membership) running() (*serf.Serf, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s := m.serf.Load()
	if s == nil {
		return nil, ErrNotStarted
	}
	return s, nil
}

// Addr returns the gossip address other members reach this one at: the
// advertised address with the actual port once started (port 0 resolved),
// the configured address before.
func (m *Membership) Addr() string {
	if l := m.local.Load(); l != nil {
		return l.String()
	}
	if m.cfg.AdvertiseAddr != "" {
		return m.cfg.AdvertiseAddr
	}
	return m.cfg.BindAddr
}

// Join contacts the seeds ("host:port" each) and returns how many
// answered. Each round tries every seed; a round in which none answers is
// logged seed by seed and followed by a back-off (100 ms doubling to 5 s,
// with jitter), until a seed answers, attempts rounds were made
// (attempts <= 0: no limit) or ctx ends.
//
// Seeds naming this member's own address are skipped, so every node may
// get the same list; with no other seed Join returns 0, nil (the first
// node of a cluster).
//
// Errors: *ConflictError when the cluster has a live member with this
// node's id at another address (retried while that member is only
// suspect); *KeyMismatchError when the gossip keys differ (not retried);
// *JoinError when no seed answered (it wraps ctx's error if ctx ended the
// retries); ErrLeft after Leave; ErrClosed.
func (m *Membership) Join(ctx context.Context, seeds []string, attempts int) (joined int, err error) {
	s, err := m.running()
	if err != nil {
		return 0, err
	}
	if s.State() != serf.SerfAlive {
		return 0, ErrLeft
	}
	targets, err := m.seedList(seeds)
	if err != nil {
		return 0, err
	}
	if len(targets) == 0 {
		m.log.Info("no seed to join but this node; starting alone")
		return 0, nil
	}
	m.joinMu.Lock()
	defer m.joinMu.Unlock()

	limit := "unlimited"
	if attempts > 0 {
		limit = strconv.Itoa(attempts)
	}
	delay := joinBackoffMin
	for attempt := 1; ; attempt++ {
		var (
			failures []error
			mismatch *KeyMismatchError
			conflict *ConflictError
		)
		for _, seed := range targets {
			if ctx.Err() != nil || m.isClosing() {
				break
			}
			n, err, c := m.joinOne(s, seed)
			if n > 0 {
				joined += n
				continue
			}
			switch {
			case c != nil && !c.retryable():
				m.log.Error("join refused: node id already in use", "node", m.cfg.NodeID,
					"seed", seed, "other", c.OtherAddr, "other_state", c.OtherState.String())
				return joined, c
			case c != nil:
				conflict = c
				err = c
			case isKeyMismatch(err):
				mismatch = &KeyMismatchError{Seed: seed, Err: err}
				err = mismatch
			}
			failures = append(failures, fmt.Errorf("%s: %w", seed, err))
			m.log.Warn("gossip join attempt failed", "seed", seed, "attempt", attempt,
				"attempts", limit, "err", err)
		}
		if joined == 0 && m.isClosing() {
			return 0, ErrClosed
		}
		if joined == 0 && ctx.Err() != nil {
			return 0, &JoinError{Seeds: targets, Attempts: attempt, Err: errors.Join(ctx.Err(), errors.Join(failures...))}
		}
		if joined > 0 {
			m.log.Info("joined the cluster", "seeds_answered", joined,
				"attempt", attempt)
			return joined, nil
		}
		if mismatch != nil {
			return 0, mismatch
		}
		if attempts > 0 && attempt >= attempts {
			if conflict != nil {
				return 0, conflict
			}
			return 0, &JoinError{Seeds: targets, Attempts: attempt, Err: errors.Join(failures...)}
		}
		wait := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return 0, &JoinError{Seeds: targets, Attempts: attempt, Err: errors.Join(ctx.Err(), errors.Join(failures...))}
		case <-m.closing:
			timer.Stop()
			return 0, ErrClosed
		}
		delay = min(2*delay, joinBackoffMax)
	}
}

func (m *Membership) isClosing() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

// joinOne runs serf's Join with one seed and returns what our merge
// delegate found, if it refused the seed's member list.
func (m *Membership) joinOne(s *serf.Serf, seed string) (int, error, *ConflictError) {
	m.conflictMu.Lock()
	m.conflict = nil
	m.conflictMu.Unlock()
	m.joining.Store(true)
	n, err := s.Join([]string{seed}, true)
	m.joining.Store(false)
	err = unwrapMulti(err)
	m.conflictMu.Lock()
	c := m.conflict
	m.conflict = nil
	m.conflictMu.Unlock()
	return n, err, c
}

// unwrapMulti replaces memberlist's multi-line multierror ("1 error
// occurred:\n\t* ...") by its errors, joined on one line.
func unwrapMulti(err error) error {
	me, ok := err.(interface{ WrappedErrors() []error })
	if !ok {
		return err
	}
	errs := me.WrappedErrors()
	switch len(errs) {
	case 0:
		return err
	case 1:
		return errs[0]
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return errors.New(strings.Join(parts, "; "))
}

// seedList trims, checks and de-duplicates seeds and drops our own address.
func (m *Membership) seedList(seeds []string) ([]string, error) {
	seen := make(map[string]bool)
	var out []string
	for _, raw := range seeds {
		seed := strings.TrimSpace(raw)
		if seed == "" {
			continue
		}
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			return nil, fmt.Errorf("membership: seed %q: want host:port: %w", raw, err)
		}
		if m.isSelf(host, port) || seen[seed] {
			continue
		}
		seen[seed] = true
		out = append(out, seed)
	}
	return out, nil
}

// isSelf reports whether host:port is this member's advertised or bound
// address. Host names are not resolved (a name that resolves to this node
// is joined like any seed, which is harmless).
func (m *Membership) isSelf(host, port string) bool {
	ip := net.ParseIP(host)
	l := m.local.Load()
	if ip == nil || l == nil || port != strconv.Itoa(int(l.port)) {
		return false
	}
	if ip.Equal(l.ip) {
		return true
	}
	bindHost, _, _ := net.SplitHostPort(m.cfg.BindAddr)
	return ip.Equal(net.ParseIP(bindHost))
}

// Members returns every member this node knows, itself included, sorted
// by ID: alive, suspect, leaving, and failed or left ones until they are
// reaped (ReapFailedAfter, ReapLeftAfter). Before Start it returns nil.
// After Close it returns the last view.
func (m *Membership) Members() []Member {
	s := m.serf.Load()
	if s == nil {
		return nil
	}
	sms := s.Members()
	now := time.Now()
	out := make([]Member, 0, len(sms))
	for _, sm := range sms {
		out = append(out, m.member(sm, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Local returns this member. Before Start its State is Unknown.
func (m *Membership) Local() Member {
	s := m.serf.Load()
	if s == nil {
		m.mu.Lock()
		tags := copyTags(m.cfg.Tags)
		m.mu.Unlock()
		return Member{ID: m.cfg.NodeID, Addr: m.Addr(), State: Unknown, Tags: tags}
	}
	return m.member(s.LocalMember(), time.Now())
}

// member converts serf's view of one member into ours.
func (m *Membership) member(sm serf.Member, now time.Time) Member {
	out := Member{ID: sm.Name, Addr: addrOf(sm.Addr, sm.Port), State: fromSerf(sm.Status), Tags: copyTags(sm.Tags)}
	if sm.Name == m.cfg.NodeID {
		out.LastHeard = now
		return out
	}
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	if _, ok := m.suspects[sm.Name]; ok && out.State == Alive {
		out.State = Suspect
	}
	out.LastHeard = m.lastAck[sm.Name]
	if t := m.lastNews[sm.Name]; t.After(out.LastHeard) {
		out.LastHeard = t
	}
	return out
}

// probeFailed records that memberlist's probe of id got no ack, direct or
// indirect: memberlist now suspects it. Called from memberlist's probe
// goroutine (through its log line, see newStdLogger) with no lock held.
//
// serf has no suspect status and memberlist exposes none (the State in
// the Nodes that Members returns is never set), so this node's own failed
// probes are the one signal available. Suspicion that reaches this node by
// gossip only is not seen; every member is probed by this node once per
// (N-1) probe intervals, so a failing member shows as suspect here soon
// enough. An ack to a later probe, or news of the member (rejoin, tags),
// clears it.
func (m *Membership) probeFailed(id string) {
	m.seenMu.Lock()
	_, already := m.suspects[id]
	m.suspects[id] = time.Now()
	m.seenMu.Unlock()
	if !already {
		m.notify()
	}
}

// SetTags replaces this member's tags and gossips them. It returns once
// the change is applied here and broadcast, or after
// Timers.BroadcastTimeout (then gossip carries it on; a warning is
// logged). Before Start it replaces the tags Start will use.
func (m *Membership) SetTags(tags map[string]string) error {
	if err := checkTags(tags); err != nil {
		return err
	}
	m.tagsMu.Lock()
	defer m.tagsMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	s := m.serf.Load()
	if s == nil {
		m.cfg.Tags = copyTags(tags)
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	if s.State() != serf.SerfAlive {
		return ErrLeft
	}
	if err := s.SetTags(copyTags(tags)); err != nil {
		m.log.Warn("tag update not yet broadcast to every member; gossip continues", "err", err)
	}
	return nil
}

// Leave leaves the cluster gracefully: the others see this member Leaving,
// then Left, never Failed. It returns when the leave has spread (about
// Timers.LeavePropagateDelay) or ctx ends; the leave then still completes
// in the background and Close waits for it. Leave is idempotent. The
// member stays up (answering probes) until Close.
func (m *Membership) Leave(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	s := m.serf.Load()
	if s == nil {
		m.mu.Unlock()
		return ErrNotStarted
	}
	if m.leaveDone == nil {
		done := make(chan struct{})
		m.leaveDone = done
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(done)
			m.log.Info("leaving the cluster")
			err := s.Leave()
			m.mu.Lock()
			m.leaveErr = err
			m.mu.Unlock()
		}()
	}
	done := m.leaveDone
	m.mu.Unlock()
	select {
	case <-done:
		m.mu.Lock()
		err := m.leaveErr
		m.mu.Unlock()
		if err != nil {
			return fmt.Errorf("membership: leave: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("membership: leave: %w", ctx.Err())
	}
}

// Shutdown leaves gracefully (bounded by ctx), then closes.
func (m *Membership) Shutdown(ctx context.Context) error {
	err := m.Leave(ctx)
	if errors.Is(err, ErrNotStarted) || errors.Is(err, ErrClosed) {
		err = nil
	}
	return errors.Join(err, m.Close())
}

// Close stops gossip at once, without leaving: the others will see this
// member fail. It is idempotent; afterwards methods return ErrClosed and
// no goroutine of this package runs. A Leave still in flight is waited
// for first (memberlist cannot shut down under a running leave): at most
// 2*BroadcastTimeout+LeavePropagateDelay. serf's and memberlist's own
// goroutines see the shutdown and end within milliseconds; they offer
// nothing to wait on.
func (m *Membership) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	s := m.serf.Load()
	leaveDone := m.leaveDone
	m.mu.Unlock()
	close(m.closing)
	if leaveDone != nil {
		<-leaveDone
	}
	var err error
	if s != nil {
		if err = s.Shutdown(); err != nil {
			err = fmt.Errorf("membership: shutdown: %w", err)
		}
	}
	close(m.stop)
	m.wg.Wait()
	return err
}

// run records what serf reports and triggers OnChange.
func (m *Membership) run() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case ev := <-m.events:
			if m.observe(ev) {
				m.notify()
			}
		}
	}
}

// observe records a serf event; it reports whether the member list changed.
func (m *Membership) observe(ev serf.Event) bool {
	me, ok := ev.(serf.MemberEvent)
	if !ok {
		return false // user events and queries: unused
	}
	now := time.Now()
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	for _, mem := range me.Members {
		delete(m.suspects, mem.Name)
		switch me.Type {
		case serf.EventMemberJoin, serf.EventMemberUpdate:
			m.lastNews[mem.Name] = now
		case serf.EventMemberReap:
			delete(m.lastNews, mem.Name)
			delete(m.lastAck, mem.Name)
		}
	}
	return true
}

// notify schedules one OnChange call; it never blocks.
func (m *Membership) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// notifier calls OnChange, one call at a time.
func (m *Membership) notifier() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.changed:
			m.cfg.OnChange()
		}
	}
}
