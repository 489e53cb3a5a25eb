package plugins

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the host's collectors. They exist even when Config.Metrics
// is nil (then they are simply not registered), which keeps the call path
// free of nil checks.
type metrics struct {
	calls    *prometheus.CounterVec   // plugin, hook
	rejects  *prometheus.CounterVec   // plugin, hook
	failures *prometheus.CounterVec   // plugin, reason
	latency  *prometheus.HistogramVec // plugin
	loads    *prometheus.CounterVec   // plugin, result
	up       *prometheus.GaugeVec     // plugin
	guestCtr *prometheus.CounterVec   // plugin, name
	guestGge *prometheus.GaugeVec     // plugin, name
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "calls_total",
			Help: "Calls into a plugin, by hook.",
		}, []string{"plugin", "hook"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "rejects_total",
			Help: "Messages a plugin rejected (by its verdict or by its failure policy), by hook.",
		}, []string{"plugin", "hook"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "failures_total",
			Help: "Calls in which a plugin failed instead of deciding, by reason (trap, timeout, abi, output, verdict, guest, canceled).",
		}, []string{"plugin", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "call_duration_seconds",
			Help:    "Duration of one plugin call, including encoding the request and decoding the verdict.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1},
		}, []string{"plugin"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "loads_total",
			Help: "Plugin loads and reloads, by result (ok, error).",
		}, []string{"plugin", "result"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "up",
			Help: "1 when a version of the plugin is serving, else 0.",
		}, []string{"plugin"}),
		guestCtr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "guest_total",
			Help: "Counters a plugin reports through the metric import.",
		}, []string{"plugin", "name"}),
		guestGge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "troupe", Subsystem: "plugin", Name: "guest_value",
			Help: "Gauges a plugin reports through the metric import.",
		}, []string{"plugin", "name"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.rejects, m.failures, m.latency, m.loads, m.up, m.guestCtr, m.guestGge} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// forget drops every series of a removed plugin.
func (m *metrics) forget(plugin string) {
	l := prometheus.Labels{"plugin": plugin}
	m.calls.DeletePartialMatch(l)
	m.rejects.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.loads.DeletePartialMatch(l)
	m.up.DeletePartialMatch(l)
	m.guestCtr.DeletePartialMatch(l)
	m.guestGge.DeletePartialMatch(l)
}

// hookMetrics are the per-hook series of one plugin, resolved once at load
// so that a call does not hash label values.
type hookMetrics struct {
	calls   prometheus.Counter
	rejects prometheus.Counter
}
