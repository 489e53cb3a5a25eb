// Command goslow is a test sidecar that waits in a host call: with the
// clock capability, time.Sleep reaches the host's nanosleep. A command of
// type "Sleep" sleeps for the duration in config "sleep"; with config
// "first_sleep" set, a command whose idempotency key this instance has not
// seen before sleeps that long first (a slow first attempt, fast retries).
package main

import (
	"strings"
	"time"

	"github.com/troupe-dev/troupe/plugins/sdk"
)

var seen = map[string]bool{}

func init() {
	sdk.OnCommand(func(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
		if c.Type == "Sleep" {
			sleep("sleep")
		}
		if k := c.IdempotencyKey; k != "" && !seen[k] {
			seen[strings.Clone(k)] = true // the request's strings die with the call
			sleep("first_sleep")
		}
		return sdk.Allow()
	})
}

func sleep(key string) {
	if s, ok := sdk.Config(key); ok {
		if d, err := time.ParseDuration(s); err == nil {
			time.Sleep(d)
		}
	}
}

func main() {}
