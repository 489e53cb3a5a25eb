package clustertest

import (
	"testing"
	"time"
)

// Eventually polls cond (every 10 ms at first, backing off to 50 ms) until
// it returns nil, and fails the test with what and cond's last error when
// it has not within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for tries := 1; ; tries++ {
		<-timer.C
		err := cond()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("%s: still not true after %s (%d tries); last error: %v", what, timeout, tries, err)
			return
		}
		timer.Reset(min(interval, time.Until(deadline)))
		interval = min(interval*3/2, 50*time.Millisecond)
	}
}
