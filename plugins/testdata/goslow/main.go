// Command goslow is a test sidecar that waits in a host call: with the
// clock capability, time.Sleep reaches the host's nanosleep. A command of
// type "Sleep" sleeps for the duration in config "sleep". With config
// "slow_until" (Unix milliseconds) set, a command that carries an
// idempotency key and arrives before that time waits until then: every
// attempt before the deadline is slow, every later one fast, whichever
// instance serves it.
package main

import (
	"strconv"
	"time"

	"github.com/troupe-dev/troupe/plugins/sdk"
)

func init() {
	sdk.OnCommand(func(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
		if c.Type == "Sleep" {
			if s, ok := sdk.Config("sleep"); ok {
				if d, err := time.ParseDuration(s); err == nil {
					time.Sleep(d)
				}
			}
		}
		if s, ok := sdk.Config("slow_until"); ok && c.IdempotencyKey != "" {
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
				if d := time.Until(time.UnixMilli(ms)); d > 0 {
					time.Sleep(d)
				}
			}
		}
		return sdk.Allow()
	})
}

func main() {}
