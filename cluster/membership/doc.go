// Package membership is a Troupe node's membership in its cluster: which
// nodes exist, where they are, what they announce (tags) and whether they
// are alive, built on hashicorp/serf (SWIM gossip through memberlist).
//
// Each node runs one Membership under its node id. Members gossip over UDP
// and TCP on one port, probe each other, and declare a member that stops
// answering Suspect and then Failed; with the default (tuned) timers that
// takes about a second. A member that calls Leave is seen Left, never
// Failed. Tags carry a node's metadata (API address, NATS route, roles,
// version) to every other node; they must fit serf's 512-byte limit.
//
// Membership informs, it does not decide: who owns a shard is decided
// elsewhere (leases); this package says who is alive and where.
//
//	changed := make(chan struct{}, 1)
//	m, err := membership.New(membership.Config{
//		NodeID:   "node-1",
//		BindAddr: "10.0.0.1:7946",
//		Key:      key, // 32 bytes, the same on every node
//		Tags:     map[string]string{"api": "http://10.0.0.1:8080"},
//		OnChange: func() {
//			select {
//			case changed <- struct{}{}:
//			default:
//			}
//		},
//	})
//	if err != nil { ... }
//	if err := m.Start(ctx); err != nil { ... }
//	defer m.Close()
//	if _, err := m.Join(ctx, []string{"10.0.0.1:7946", "10.0.0.2:7946"}, 10); err != nil { ... }
//	for range changed { // in the goroutine that owns the placement
//		rebuild(m.Members())
//	}
//	...
//	m.Shutdown(ctx) // leave gracefully, then close
//
// The timers and the choices behind them (reaping, id conflicts, restarts
// at a new address) are in docs/adr (membership and failure-detection
// timers).
package membership
