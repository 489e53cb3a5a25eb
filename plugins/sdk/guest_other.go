//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
	"os"
)

// Host import stubs, so that plugin code builds and unit-tests on the host.

func hostLog(level int32, msg string) {
	fmt.Fprintf(os.Stderr, "plugin log level=%d: %s\n", level, msg)
}

func hostMetric(int32, string, float64) {}

func hostLookup(bool, string) (string, bool) { return "", false }

func hostHTTP([]byte) ([]byte, error) {
	return nil, errors.New("http_call: only available inside the plugin host")
}
