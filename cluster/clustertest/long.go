package clustertest

import "os"

// LongEnv names the environment variable that turns on the long runs (soak,
// many kill cycles): `make test-long` sets it.
const LongEnv = "TROUPE_LONG"

// Long reports whether the long runs are asked for (TROUPE_LONG set and not
// "0"). Cluster tests scale their cycles with it instead of skipping: the
// default suite runs a short version of every scenario.
func Long() bool {
	v := os.Getenv(LongEnv)
	return v != "" && v != "0"
}
