package bustest

// TakePorts makes the next calls of freePort return ports (which the
// test holds), as if another process had taken them after they were
// chosen.
func TakePorts(ports ...int) { takenPorts = append(takenPorts[:0], ports...) }
