// Command rate-limit is a sidecar plugin that limits commands per entity
// with a token bucket: each entity (kind/id) may send `burst` commands at
// once and `rate` per second on average (config values). It needs the
// clock grant, and max_instances = 1 so that one instance sees every
// command (each instance has its own buckets).
package main

import (
	"strconv"
	"time"

	"github.com/troupe-dev/troupe/plugins/sdk"
)

type bucket struct {
	tokens float64
	last   time.Time
}

var (
	rate    = 10.0 // tokens per second
	burst   = 20.0
	buckets = map[string]*bucket{}
)

const maxBuckets = 100_000 // beyond this, idle buckets are dropped

func init() {
	rate = floatConfig("rate", rate)
	burst = floatConfig("burst", burst)
	sdk.OnCommand(limit)
}

func floatConfig(key string, def float64) float64 {
	s, ok := sdk.Config(key)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		sdk.Warn("rate-limit: ignoring bad " + key + " " + strconv.Quote(s))
		return def
	}
	return f
}

func limit(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
	now := time.Now()
	key := c.Kind + "/" + c.EntityID
	b := buckets[key]
	if b == nil {
		if len(buckets) >= maxBuckets {
			evict(now)
		}
		b = &bucket{tokens: burst, last: now}
		buckets[key] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * rate
	if b.tokens > burst {
		b.tokens = burst
	}
	b.last = now
	if b.tokens < 1 {
		sdk.Count("limited", 1)
		// The client sees resource_exhausted (HTTP 429) and when one
		// token is back: the host reads these two metadata keys of a
		// rejection (docs/errors.md).
		wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
		ms := max(1, (wait+time.Millisecond-1)/time.Millisecond)
		return sdk.Reject("rate limit exceeded for "+key+": at most "+
			strconv.FormatFloat(rate, 'f', -1, 64)+" commands/s (burst "+strconv.FormatFloat(burst, 'f', -1, 64)+")").
			Annotate("troupe-code", "resource_exhausted").
			Annotate("troupe-retry-after-ms", strconv.FormatInt(int64(ms), 10))
	}
	b.tokens--
	return sdk.Allow()
}

// evict drops the buckets that are full again (idle long enough).
func evict(now time.Time) {
	for k, b := range buckets {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= burst {
			delete(buckets, k)
		}
	}
}

func main() {}
