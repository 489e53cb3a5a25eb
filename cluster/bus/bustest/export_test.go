package bustest

import "testing"

// TakePorts makes the next calls of freePort return ports (which the
// test holds), as if another process had taken them after they were
// chosen.
func TakePorts(ports ...int) { takenPorts = append(takenPorts[:0], ports...) }

// FreePort is freePort: a port that was free a moment ago.
func FreePort(t testing.TB) int { return freePort(t) }

// PortOf is the port of a host:port.
func PortOf(hostport string) int { return portOf(hostport) }
