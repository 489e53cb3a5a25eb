// Package clustertest runs Troupe clusters of real troupe processes for
// tests: it builds the binary once, starts N nodes with their own
// directories and ports, kills (SIGKILL), stops (SIGTERM) and restarts them,
// keeps their logs (printed when a test fails), and, with network
// namespaces, cuts links between them.
//
//	func TestFailover(t *testing.T) {
//		c := clustertest.Start(t, clustertest.Options{Nodes: 3, Namespaces: true})
//		c.Node(0).Kill()
//		c.Partition([]int{1}, []int{2})
//		clustertest.Eventually(t, 10*time.Second, "n2 serves", func() error {
//			resp, err := c.HTTPClient().Get(c.Node(1).HTTPURL() + "/healthz")
//			if err != nil {
//				return err
//			}
//			return resp.Body.Close()
//		})
//		c.Heal()
//		if err := c.Node(0).Start(); err != nil {
//			t.Fatal(err)
//		}
//	}
//
// A package whose tests use the harness removes the built binary at the
// end with
//
//	func TestMain(m *testing.M) { os.Exit(clustertest.Main(m)) }
//
// # Processes
//
// Binary builds ./cmd/runtime once per test process (or takes TROUPE_BIN).
// Each node's command line is Options.Args (default ClusterArgs; the
// cluster flags --node-id, --gossip, --cluster-port and --join) plus
// Options.ExtraArgs, evaluated at every start; a node's directory and ports
// never change, so a restart finds its data. A node is ready when it logs
// "node ready". Children get SIGKILL from the kernel if the test process
// dies (Pdeathsig), and the test's cleanup kills whatever still runs, by
// pid, and waits for it.
//
// # Network
//
// Without Options.Namespaces every node listens on 127.0.0.1 with free
// ports. With it (root and iproute2 needed; otherwise the test is skipped
// with the reason) each cluster gets a hub namespace holding a bridge, one
// namespace per node (address 10.x.0.(11+i)/24, fixed ports 8080 HTTP, 4222
// NATS, 7946 gossip, 6222 routes) and one for clients (10.x.0.2), all
// joined to the bridge by veth pairs. No namespace has a default route, and
// none is connected to the namespace the test runs in: the test reaches the
// nodes only through HTTPClient, Dial and CLI, which work from the client
// namespace, and DialFrom, which works from a node's namespace. Namespace
// names are "trct-<pid>-<seq>-<role>"; New removes those whose pid is dead.
//
// Cuts are `ip rule ... blackhole` rules in the receiving namespace that
// drop packets from the sender's address on arrival, silently and for
// established connections too (iptables and tc actions are not available
// here). See Cut for what "one-way" means for TCP. docs/testing.md has the
// whole picture.
package clustertest
