package membership

import (
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestDetectionDistribution kills (Close without Leave) a member of a
// three-member cluster again and again and reports how long the two
// survivors took to declare it failed: with the tuned timers 20 times,
// with LANTimers 5 times for comparison. It runs only with TROUPE_LONG=1
// (about a minute):
//
//	TROUPE_LONG=1 go test -run TestDetectionDistribution -v ./cluster/membership/
func TestDetectionDistribution(t *testing.T) {
	if os.Getenv("TROUPE_LONG") != "1" {
		t.Skip("long test: set TROUPE_LONG=1")
	}
	for _, tt := range []struct {
		name   string
		timers Timers
		kills  int
		bound  time.Duration // a detection slower than this fails the test
	}{
		{"tuned", TunedTimers(), 20, 2 * time.Second},
		{"LAN", LANTimers(), 5, 15 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			timers := func(c *Config) {
				c.Timers = tt.timers
				c.ReapFailedAfter = 2 * time.Second
				c.Timers.ReapInterval = 500 * time.Millisecond
			}
			survivors := formCluster(t, []string{"a", "b"}, timers)
			var first, all []time.Duration
			for i := range tt.kills {
				cfg := Config{NodeID: "victim"}
				timers(&cfg)
				victim := startNode(t, cfg)
				joinOK(t, victim, survivors[0].Addr())
				for _, s := range survivors {
					waitState(t, s, "victim", 10*time.Second, Alive)
				}
				// Vary the phase against the probe rounds.
				time.Sleep(time.Duration(rand.Int64N(int64(tt.timers.ProbeInterval))))

				seen := make([]time.Duration, len(survivors))
				var wg sync.WaitGroup
				start := time.Now()
				if err := victim.Close(); err != nil {
					t.Fatal(err)
				}
				for j, s := range survivors {
					wg.Add(1)
					go func() {
						defer wg.Done()
						deadline := start.Add(3 * tt.bound)
						for time.Now().Before(deadline) {
							if m, ok := memberOf(s, "victim"); ok && m.State == Failed && m.Addr == victim.Addr() {
								seen[j] = time.Since(start)
								return
							}
							time.Sleep(2 * time.Millisecond)
						}
					}()
				}
				wg.Wait()
				slices.Sort(seen)
				if seen[0] == 0 {
					t.Fatalf("kill %d: not detected within %v", i+1, 3*tt.bound)
				}
				first = append(first, seen[0])
				all = append(all, seen[len(seen)-1])
				t.Logf("kill %2d: first survivor %v, both %v", i+1, seen[0].Round(time.Millisecond), seen[len(seen)-1].Round(time.Millisecond))
			}
			for _, d := range []struct {
				what string
				ds   []time.Duration
			}{{"first survivor", first}, {"both survivors", all}} {
				slices.Sort(d.ds)
				q := func(p float64) time.Duration {
					return d.ds[int(p*float64(len(d.ds)-1)+0.5)].Round(time.Millisecond)
				}
				t.Logf("%s timers, %d kills, failed as seen by the %s: min %v, median %v, p90 %v, max %v",
					tt.name, len(d.ds), d.what, q(0), q(0.5), q(0.9), q(1))
			}
			if worst := slices.Max(all); worst > tt.bound {
				t.Errorf("slowest detection %v, over %v", worst, tt.bound)
			}
		})
	}
}
