package node

import "testing"

func TestAdvertisedUsesTheAdvertisedGossipHost(t *testing.T) {
	for _, tc := range []struct {
		gossip, advertise, addr, want string
	}{
		{"127.0.0.1:7946", "", "127.0.0.1:6222", "127.0.0.1:6222"},
		{"0.0.0.0:7946", "", "0.0.0.0:6222", "0.0.0.0:6222"},
		{"10.0.0.5:7946", "", "0.0.0.0:6222", "10.0.0.5:6222"},
		{"0.0.0.0:7946", "n1:7946", "0.0.0.0:6222", "n1:6222"},
		{"0.0.0.0:7946", "n1:7946", "[::]:4222", "n1:4222"},
		{"0.0.0.0:7946", "n1:7946", "10.1.2.3:6222", "10.1.2.3:6222"},
	} {
		n := &Node{cfg: Config{Gossip: tc.gossip, GossipAdvertise: tc.advertise}}
		if got := n.advertised(tc.addr); got != tc.want {
			t.Errorf("gossip %s advertise %q: advertised(%s) = %s, want %s", tc.gossip, tc.advertise, tc.addr, got, tc.want)
		}
	}
}
