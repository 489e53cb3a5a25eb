package dashboard

import (
	"sort"
	"sync"
	"time"
)

// Rates are per-second rates over the recent past, derived from Totals.
type Rates struct {
	// Window is the span the rates are measured over (0: not measured
	// yet; the first page load has only one sample).
	Window time.Duration `json:"window_ns"`
	// Events is appended events per second; Commands the API's commands
	// (of which FailedCommands failed); Queries the API's queries.
	Events         float64 `json:"events"`
	Commands       float64 `json:"commands"`
	FailedCommands float64 `json:"failed_commands"`
	Queries        float64 `json:"queries"`
	// ByKind are the command rates of each kind, by name.
	ByKind []KindRate `json:"by_kind"`
	// EventSeries is events per second between consecutive samples,
	// oldest first (for the sparkline).
	EventSeries []float64 `json:"event_series"`
}

// KindRate is the command rate and totals of one entity kind.
type KindRate struct {
	Kind     string  `json:"kind"`
	Commands float64 `json:"commands"`
	Failed   float64 `json:"failed"`
	// OK and FailedTotal are the totals since the node started.
	OK          uint64 `json:"ok"`
	FailedTotal uint64 `json:"failed_total"`
}

// sampler keeps recent samples of the totals and derives rates from them.
// It samples when asked (on page loads and refreshes), so it needs no
// goroutine; with no page open it holds still. Safe for concurrent use.
type sampler struct {
	window time.Duration // rates are measured over at most this span
	minGap time.Duration // samples closer than this are not kept
	keep   time.Duration // samples older than this are dropped

	mu      sync.Mutex
	samples []sample // oldest first
}

type sample struct {
	at time.Time
	t  Totals
}

func newSampler() *sampler {
	return &sampler{window: 10 * time.Second, minGap: time.Second, keep: 3 * time.Minute}
}

// observe records the totals seen at now and returns the rates.
func (s *sampler) observe(now time.Time, t Totals) Rates {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].at) >= s.minGap {
		s.samples = append(s.samples, sample{now, t})
	}
	drop := 0
	for drop < len(s.samples) && now.Sub(s.samples[drop].at) > s.keep {
		drop++
	}
	s.samples = s.samples[drop:]

	var r Rates
	// The base is the oldest sample within the window, at least minGap
	// back: a shorter span gives rates that are mostly noise.
	for i := range s.samples {
		b := s.samples[i]
		dt := now.Sub(b.at)
		if dt > s.window {
			continue
		}
		if dt < s.minGap {
			break
		}
		r.Window = dt
		r.Events = perSecond(t.Events, b.t.Events, dt)
		ok, failed := sum(t.Commands)
		bok, bfailed := sum(b.t.Commands)
		r.Commands = perSecond(ok+failed, bok+bfailed, dt)
		r.FailedCommands = perSecond(failed, bfailed, dt)
		r.Queries = perSecond(t.Queries+t.FailedQueries, b.t.Queries+b.t.FailedQueries, dt)
		before := map[string]KindCount{}
		for _, k := range b.t.Commands {
			before[k.Kind] = k
		}
		for _, k := range t.Commands {
			bk := before[k.Kind]
			r.ByKind = append(r.ByKind, KindRate{
				Kind:     k.Kind,
				Commands: perSecond(k.OK+k.Failed, bk.OK+bk.Failed, dt),
				Failed:   perSecond(k.Failed, bk.Failed, dt),
				OK:       k.OK, FailedTotal: k.Failed,
			})
		}
		break
	}
	if r.Window == 0 {
		for _, k := range t.Commands {
			r.ByKind = append(r.ByKind, KindRate{Kind: k.Kind, OK: k.OK, FailedTotal: k.Failed})
		}
	}
	sort.Slice(r.ByKind, func(i, j int) bool { return r.ByKind[i].Kind < r.ByKind[j].Kind })

	// The series runs over consecutive samples; a gap longer than the
	// window (nobody was looking) starts it afresh.
	for i := 1; i < len(s.samples); i++ {
		a, b := s.samples[i-1], s.samples[i]
		dt := b.at.Sub(a.at)
		if dt > s.window {
			r.EventSeries = r.EventSeries[:0]
			continue
		}
		r.EventSeries = append(r.EventSeries, perSecond(b.t.Events, a.t.Events, dt))
	}
	return r
}

func sum(ks []KindCount) (ok, failed uint64) {
	for _, k := range ks {
		ok += k.OK
		failed += k.Failed
	}
	return ok, failed
}

// perSecond is the rate of a counter that went from before to now over dt;
// a counter that went down (a restarted source) counts as no change.
func perSecond(now, before uint64, dt time.Duration) float64 {
	if now <= before || dt <= 0 {
		return 0
	}
	return float64(now-before) / dt.Seconds()
}
