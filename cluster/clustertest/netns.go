package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every network namespace the harness creates:
// nsPrefix + "<creating pid>-<cluster seq>-<role>". The pid lets a later run
// remove what a crashed run left behind (sweepStale).
const nsPrefix = "trct-"

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// Fixed ports inside namespaces: every node has its own address there, so
// the ports can be the same for all and stay below the ephemeral port range
// (a one-way cut relies on that, see Cut).
const (
	nsHTTPPort   = 8080
	nsNATSPort   = 4222
	nsGossipPort = 7946
	nsRoutePort  = 6222
)

// clusterSeq numbers the clusters of this process so that namespace names
// never collide between parallel tests.
var clusterSeq atomic.Int64

// ipTimeout bounds every `ip` command.
const ipTimeout = 30 * time.Second

// ipCmd runs `ip args...` and returns its combined output in the error.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ipPath, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs several `ip` commands in namespace ns with one process.
func ipBatch(ns string, lines ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ipPath, "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch [%s]: %w: %s", ns, strings.Join(lines, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipPath is the `ip` command, set by the probe; sbin may be missing from
// PATH.
var ipPath = "ip"

func findIP() (string, error) {
	p, err := exec.LookPath("ip")
	if err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if fi, serr := os.Stat(p); serr == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", err
}

var (
	probeOnce   sync.Once
	probeReason string // why namespaces are unavailable; "" when they work
)

// namespacesUnavailable says why this process cannot create the topology,
// or "" when it can. It probes once per process: a namespace holding a
// bridge and a veth pair, deleted at once.
func namespacesUnavailable() string {
	probeOnce.Do(func() {
		if runtime.GOOS != "linux" {
			probeReason = "network namespaces need Linux, this is " + runtime.GOOS
			return
		}
		if os.Geteuid() != 0 {
			probeReason = "network namespaces need root (euid is " + strconv.Itoa(os.Geteuid()) + ")"
			return
		}
		p, err := findIP()
		if err != nil {
			probeReason = "no `ip` command (install iproute2): " + err.Error()
			return
		}
		ipPath = p
		ns := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
		if err := ipCmd("netns", "add", ns); err != nil {
			probeReason = "cannot create a network namespace: " + err.Error()
			return
		}
		defer func() { _ = ipCmd("netns", "del", ns) }()
		if err := ipBatch(ns, "link add br0 type bridge", "link add v0 type veth peer name v1", "link set v0 master br0"); err != nil {
			probeReason = "cannot create a bridge and veth pair in a namespace: " + err.Error()
		}
	})
	return probeReason
}

var sweepOnce sync.Once

// sweepStale removes namespaces with our prefix whose creating process no
// longer runs (left by a crashed or killed test run). It runs once per
// process; namespaces of live processes (parallel test binaries) are left
// alone.
func sweepStale() {
	sweepOnce.Do(func() { _ = removeStaleNamespaces() })
}

func removeStaleNamespaces() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		pid, ok := creatorPID(e.Name())
		if !ok || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := ipCmd("netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// creatorPID parses the pid out of a namespace name made by this package.
func creatorPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	return leadingPID(rest)
}

// leadingPID parses "<pid>-..." .
func leadingPID(s string) (int, bool) {
	digits, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pickSubnet returns the first of our candidate /24 networks that overlaps
// no address or route of the namespace this test process runs in. Our
// namespaces are never connected to it, but a distinct subnet keeps logs
// and mistakes unambiguous.
func pickSubnet() (*net.IPNet, error) {
	var taken []*net.IPNet
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			taken = append(taken, n)
		}
	}
	taken = append(taken, routeNets()...)
	for b := 213; b < 250; b++ {
		cand := &net.IPNet{IP: net.IPv4(10, byte(b), 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
		free := true
		for _, n := range taken {
			if n.Contains(cand.IP) || cand.Contains(n.IP) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return nil, errors.New("clustertest: every candidate subnet 10.213-249.0.0/24 overlaps this machine's networks")
}

// routeNets lists the IPv4 destinations of the main routing table, except
// the default route (which contains everything).
func routeNets() []*net.IPNet {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil
	}
	var out []*net.IPNet
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		// /proc/net/route prints addresses in host (little-endian) order.
		ip := net.IPv4(byte(dst), byte(dst>>8), byte(dst>>16), byte(dst>>24)).To4()
		m := net.IPv4Mask(byte(mask), byte(mask>>8), byte(mask>>16), byte(mask>>24))
		out = append(out, &net.IPNet{IP: ip, Mask: m})
	}
	return out
}

// inNetns runs f on an OS thread switched into namespace ns, then switches
// the thread back. Sockets f creates belong to ns for their whole life. If
// the thread cannot be switched back, the goroutine exits still locked and
// the Go runtime discards the thread, so no other goroutine ever runs in ns.
func inNetns(ns string, f func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, err))
			return // still locked: the runtime ends this thread
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// dialIn dials addr with a socket created inside namespace ns.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listenIn listens on addr inside namespace ns.
func listenIn(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// listenPacketIn opens a packet socket on addr inside namespace ns.
func listenPacketIn(ns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := inNetns(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// ephemeralLow reads the lowest ephemeral port of namespace ns: local ports
// of outgoing connections are at or above it, listening ports we choose are
// below it.
func ephemeralLow(ns string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ipPath, "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_local_port_range").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("read the ephemeral port range of %s: %w: %s", ns, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("ephemeral port range of %s: unexpected %q", ns, out)
	}
	return strconv.Atoi(f[0])
}

// topology is the network of one cluster: a hub namespace holding a bridge,
// one namespace per node and one for clients, each joined to the bridge by
// a veth pair. No namespace has a default route, and none is connected to
// the namespace the test runs in.
type topology struct {
	prefix string     // nsPrefix + "<pid>-<seq>-"
	subnet *net.IPNet // a /24; the client is .2, node i (0-based) is .(11+i)
	hub    string
	client string
	ns     []string // every namespace created, in creation order
}

func (tp *topology) clientIP() string { return tp.host(2) }

func (tp *topology) nodeIP(i int) string { return tp.host(11 + i) }

func (tp *topology) host(last int) string {
	ip := make(net.IP, 4)
	copy(ip, tp.subnet.IP.To4())
	ip[3] = byte(last)
	return ip.String()
}

// newTopology creates the hub and client namespaces.
func newTopology() (*topology, error) {
	subnet, err := pickSubnet()
	if err != nil {
		return nil, err
	}
	tp := &topology{
		prefix: fmt.Sprintf("%s%d-%d-", nsPrefix, os.Getpid(), clusterSeq.Add(1)),
		subnet: subnet,
	}
	tp.hub = tp.prefix + "hub"
	if err := tp.addNS(tp.hub); err != nil {
		return tp, err
	}
	if err := ipBatch(tp.hub, "link set lo up", "link add br0 type bridge", "link set br0 up"); err != nil {
		return tp, err
	}
	tp.client = tp.prefix + "cli"
	return tp, tp.attach(tp.client, "vc", tp.clientIP())
}

// addNode creates the namespace of node i and attaches it to the bridge.
func (tp *topology) addNode(i int, id string) (string, error) {
	if 11+i > 254 {
		return "", fmt.Errorf("clustertest: at most %d nodes with namespaces", 254-11+1)
	}
	ns := tp.prefix + id
	return ns, tp.attach(ns, "v"+strconv.Itoa(i), tp.nodeIP(i))
}

func (tp *topology) addNS(ns string) error {
	if err := ipCmd("netns", "add", ns); err != nil {
		return err
	}
	tp.ns = append(tp.ns, ns)
	return nil
}

// attach creates namespace ns with eth0 (address ip/24) bridged to the hub
// through hubSide. The local-table rule moves from priority 0 to 100 so that
// the cut rules (priority 10) see packets addressed to this namespace.
func (tp *topology) attach(ns, hubSide, ip string) error {
	if err := tp.addNS(ns); err != nil {
		return err
	}
	if err := ipBatch(tp.hub,
		"link add "+hubSide+" type veth peer name eth0 netns "+ns,
		"link set "+hubSide+" master br0 up",
	); err != nil {
		return err
	}
	ones, _ := tp.subnet.Mask.Size()
	return ipBatch(ns,
		"link set lo up",
		fmt.Sprintf("addr add %s/%d dev eth0", ip, ones),
		"link set eth0 up",
		"rule add pref 100 lookup local",
		"rule del pref 0 lookup local",
	)
}

// close deletes every namespace, nodes first and the hub last; the veth
// pairs and the bridge go with them. Processes must be gone already, or
// their namespace lives on (unnamed) until they exit.
func (tp *topology) close() error {
	var errs []error
	for i := len(tp.ns) - 1; i >= 0; i-- {
		if err := ipCmd("netns", "del", tp.ns[i]); err != nil {
			errs = append(errs, err)
		}
	}
	tp.ns = nil
	return errors.Join(errs...)
}

// namespacesWithPrefix lists the named namespaces whose names start with
// prefix.
func namespacesWithPrefix(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
