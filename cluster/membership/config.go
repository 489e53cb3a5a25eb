package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"
)

// Defaults for Config. The reasons are in docs/adr (membership timers).
const (
	// DefaultBindAddr listens on loopback only, like the node's other
	// listeners: a cluster across machines must say which interface to use.
	DefaultBindAddr = "127.0.0.1:7946"

	// DefaultReapFailedAfter keeps a failed member listed (as Failed) for
	// ten minutes. While it is listed serf keeps trying to reconnect to it,
	// so a partition shorter than this heals by itself; after it, the
	// member is forgotten and only a new Join brings it back.
	DefaultReapFailedAfter = 10 * time.Minute

	// DefaultReapLeftAfter keeps a member that left gracefully listed (as
	// Left) for one minute: long enough for every member to learn of the
	// leave before the record goes, short because a member that said
	// goodbye needs no reconnecting.
	DefaultReapLeftAfter = time.Minute

	// MaxTagsSize is serf's limit for a member's tags, encoded (a magic
	// byte plus the msgpack map); memberlist carries them in every alive
	// message.
	MaxTagsSize = 512

	// maxNodeIDLen is serf's limit for a node name.
	maxNodeIDLen = 128
)

// Config configures one member. The zero value is not usable: NodeID is
// required. Every other field has a default.
type Config struct {
	// NodeID names this member in the cluster (serf's node name). It must
	// be unique among live members; 1-128 characters from [A-Za-z0-9._-],
	// starting with a letter or digit.
	NodeID string

	// BindAddr is the "host:port" to gossip on, UDP and TCP on the same
	// port. Port 0 picks a free port (see Membership.Addr). A host name is
	// resolved at Start. Default: DefaultBindAddr (loopback).
	BindAddr string

	// AdvertiseAddr is the "host:port" other members use to reach this one.
	// Default: the bound address; when the bind host is unspecified
	// (0.0.0.0) memberlist advertises the first private IPv4 address.
	AdvertiseAddr string

	// Key enables gossip encryption (AES-GCM) with this key: 16, 24 or 32
	// bytes. Every member must use the same key; a member with another key,
	// or none, cannot join (Join returns a *KeyMismatchError).
	Key []byte

	// Tags are this member's initial tags (node metadata: API URL, NATS
	// route URL, roles, version...). Encoded they must fit MaxTagsSize.
	Tags map[string]string

	// ReapFailedAfter is how long a failed member stays listed as Failed
	// before it is removed (serf's ReconnectTimeout). While listed, serf
	// keeps trying to reach it. Default: DefaultReapFailedAfter.
	ReapFailedAfter time.Duration

	// ReapLeftAfter is how long a member that left stays listed as Left
	// (serf's TombstoneTimeout). Default: DefaultReapLeftAfter.
	ReapLeftAfter time.Duration

	// Timers are the failure-detection and gossip timers. Zero fields take
	// the tuned values of TunedTimers; LANTimers gives memberlist's LAN
	// defaults for comparison.
	Timers Timers

	// OnChange, if set, is called after any change of the member list: a
	// member joined, failed, left, was reaped, became suspect or alive
	// again, or changed its tags. Calls come from one goroutine owned by
	// the Membership, never concurrently with each other and never while
	// serf waits: changes that happen while OnChange runs are coalesced
	// into one more call. Read the new state with Members. OnChange must
	// not call Close or Shutdown (they wait for it).
	OnChange func()

	// Logger receives serf's and memberlist's logs (their "[WARN] ..."
	// lines become slog records of that level) and this package's own,
	// all with component=serf. Default: discard.
	Logger *slog.Logger
}

// Timers are serf's and memberlist's timing knobs that decide how fast a
// failure is detected and how fast news spreads. A zero field takes the
// value of TunedTimers.
type Timers struct {
	// ProbeInterval is how often this member probes one other member
	// (round robin). memberlist: ProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// indirect probes start; it must be below ProbeInterval and above the
	// network's p99 round trip. memberlist: ProbeTimeout.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a member stays suspect before it is
	// declared failed: SuspicionMult * max(1, log10(N)) * ProbeInterval.
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion timeout when few other
	// members confirm the suspicion (memberlist's Lifeguard).
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often queued broadcasts (joins, leaves,
	// suspicions, tag changes) are sent to GossipNodes random members.
	GossipInterval time.Duration
	// GossipNodes is how many members each gossip round sends to.
	GossipNodes int
	// RetransmitMult: each broadcast is sent RetransmitMult * ceil(log10(N+1))
	// times. At least 3: with fast timers 2 made joins and events arrive
	// 11-25 s late in our measurements (shared FACTS).
	RetransmitMult int
	// PushPullInterval is how often a full state sync runs with one random
	// member over TCP (anti-entropy).
	PushPullInterval time.Duration
	// StreamTimeout bounds one TCP exchange: a join's state sync, a
	// push/pull, a fallback TCP probe. A join to an unreachable seed that
	// drops packets costs this much per attempt. memberlist: TCPTimeout.
	StreamTimeout time.Duration
	// GossipToTheDead is how long a failed member still receives gossip, so
	// that a member wrongly declared failed learns it and refutes.
	GossipToTheDead time.Duration
	// BroadcastTimeout bounds how long SetTags and Leave wait for their
	// broadcast to go out.
	BroadcastTimeout time.Duration
	// LeavePropagateDelay is how long Leave keeps answering probes after
	// its leave was broadcast, so that no member sees it fail.
	LeavePropagateDelay time.Duration
	// ReapInterval is how often failed and left members are checked against
	// ReapFailedAfter and ReapLeftAfter.
	ReapInterval time.Duration
	// ReconnectInterval is how often serf tries to reach a failed member
	// (one at random) to heal a partition.
	ReconnectInterval time.Duration
}

// TunedTimers are the defaults: a dead member is declared failed after
// 0.6-0.93 s on this machine kind (max 1.33 s), against 5.5-7.3 s with
// LANTimers (shared FACTS; measured again in TestDetectionDistribution).
func TunedTimers() Timers {
	return Timers{
		ProbeInterval:           200 * time.Millisecond,
		ProbeTimeout:            100 * time.Millisecond,
		SuspicionMult:           2,
		SuspicionMaxTimeoutMult: 6,
		GossipInterval:          50 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          4,
		PushPullInterval:        5 * time.Second,
		StreamTimeout:           2 * time.Second,
		GossipToTheDead:         5 * time.Second,
		BroadcastTimeout:        2 * time.Second,
		LeavePropagateDelay:     500 * time.Millisecond,
		ReapInterval:            time.Second,
		ReconnectInterval:       5 * time.Second,
	}
}

// LANTimers are memberlist's DefaultLANConfig and serf's DefaultConfig
// timers, for comparison with TunedTimers.
func LANTimers() Timers {
	return Timers{
		ProbeInterval:           time.Second,
		ProbeTimeout:            500 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		GossipInterval:          200 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          4,
		PushPullInterval:        30 * time.Second,
		StreamTimeout:           10 * time.Second,
		GossipToTheDead:         30 * time.Second,
		BroadcastTimeout:        5 * time.Second,
		LeavePropagateDelay:     time.Second,
		ReapInterval:            15 * time.Second,
		ReconnectInterval:       30 * time.Second,
	}
}

// withDefaults fills the zero fields from TunedTimers.
func (t Timers) withDefaults() Timers {
	d := TunedTimers()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&t.ProbeInterval, d.ProbeInterval)
	setDur(&t.ProbeTimeout, d.ProbeTimeout)
	setInt(&t.SuspicionMult, d.SuspicionMult)
	setInt(&t.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setDur(&t.GossipInterval, d.GossipInterval)
	setInt(&t.GossipNodes, d.GossipNodes)
	setInt(&t.RetransmitMult, d.RetransmitMult)
	setDur(&t.PushPullInterval, d.PushPullInterval)
	setDur(&t.StreamTimeout, d.StreamTimeout)
	setDur(&t.GossipToTheDead, d.GossipToTheDead)
	setDur(&t.BroadcastTimeout, d.BroadcastTimeout)
	setDur(&t.LeavePropagateDelay, d.LeavePropagateDelay)
	setDur(&t.ReapInterval, d.ReapInterval)
	setDur(&t.ReconnectInterval, d.ReconnectInterval)
	return t
}

// Validate reports the first problem with t (after defaults).
func (t Timers) Validate() error {
	durs := []struct {
		name string
		v    time.Duration
	}{
		{"ProbeInterval", t.ProbeInterval}, {"ProbeTimeout", t.ProbeTimeout},
		{"GossipInterval", t.GossipInterval}, {"PushPullInterval", t.PushPullInterval},
		{"StreamTimeout", t.StreamTimeout}, {"GossipToTheDead", t.GossipToTheDead},
		{"BroadcastTimeout", t.BroadcastTimeout},
		{"LeavePropagateDelay", t.LeavePropagateDelay}, {"ReapInterval", t.ReapInterval},
		{"ReconnectInterval", t.ReconnectInterval},
	}
	for _, d := range durs {
		if d.v < 0 {
			return fmt.Errorf("membership: timers: %s is negative (%s)", d.name, d.v)
		}
	}
	if t.ProbeTimeout >= t.ProbeInterval {
		return fmt.Errorf("membership: timers: ProbeTimeout (%s) must be below ProbeInterval (%s)",
			t.ProbeTimeout, t.ProbeInterval)
	}
	if t.SuspicionMult < 1 || t.SuspicionMaxTimeoutMult < 1 || t.GossipNodes < 1 {
		return fmt.Errorf("membership: timers: SuspicionMult (%d), SuspicionMaxTimeoutMult (%d) and GossipNodes (%d) must be at least 1",
			t.SuspicionMult, t.SuspicionMaxTimeoutMult, t.GossipNodes)
	}
	if t.RetransmitMult < 3 {
		return fmt.Errorf("membership: timers: RetransmitMult %d is below 3: with fast timers it delays joins and events by seconds; use 4",
			t.RetransmitMult)
	}
	return nil
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.ReapFailedAfter == 0 {
		c.ReapFailedAfter = DefaultReapFailedAfter
	}
	if c.ReapLeftAfter == 0 {
		c.ReapLeftAfter = DefaultReapLeftAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Timers = c.Timers.withDefaults()
	c.Tags = copyTags(c.Tags)
	if c.Key != nil {
		c.Key = append([]byte(nil), c.Key...)
	}
	return c
}

// Validate reports the first problem with c. New calls it after applying
// the defaults.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("membership: NodeID is required")
	}
	if len(c.NodeID) > maxNodeIDLen || !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("membership: node id %q: use 1-%d characters from [A-Za-z0-9._-], starting with a letter or digit",
			c.NodeID, maxNodeIDLen)
	}
	if err := checkHostPort("BindAddr", c.BindAddr, true); err != nil {
		return err
	}
	if c.AdvertiseAddr != "" {
		if err := checkHostPort("AdvertiseAddr", c.AdvertiseAddr, false); err != nil {
			return err
		}
	}
	switch len(c.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("membership: gossip encryption key is %d bytes; it must be 16, 24 or 32 (AES-128, -192, -256)", len(c.Key))
	}
	if err := checkTags(c.Tags); err != nil {
		return err
	}
	if c.ReapFailedAfter < 0 || c.ReapLeftAfter < 0 {
		return fmt.Errorf("membership: ReapFailedAfter (%s) and ReapLeftAfter (%s) must not be negative",
			c.ReapFailedAfter, c.ReapLeftAfter)
	}
	return c.Timers.Validate()
}

// checkHostPort checks a "host:port" address. Port 0 is allowed only
// where the kernel may pick the port (the bind address).
func checkHostPort(field, addr string, zeroPort bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("membership: %s %q: want host:port: %w", field, addr, err)
	}
	if host == "" {
		return fmt.Errorf("membership: %s %q: host is empty (use 0.0.0.0 to listen on every interface)", field, addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("membership: %s %q: bad port: %w", field, addr, err)
	}
	if p == 0 && !zeroPort {
		return fmt.Errorf("membership: %s %q: port 0 cannot be advertised", field, addr)
	}
	return nil
}

func copyTags(tags map[string]string) map[string]string {
	out := make(map[string]string, len(tags))
	for k, v := range tags {
		out[k] = v
	}
	return out
}
