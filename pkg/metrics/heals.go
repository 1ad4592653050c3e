package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HealBuckets are the upper bounds, in seconds, of the heal-duration
// histogram: from half a millisecond (a move on one machine) to about 16 s
// (a lease expiry on etcd and a slow dial).
var HealBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)

// Heals counts connections that healed, by cause, and how long each took:
//
//	tether_<subsystem>_heals_total{cause}
//	tether_<subsystem>_heal_duration_seconds{cause}  (histogram)
//
// The process that observes heals defines what a heal and its cause are
// and what the duration measures, and documents it.
type Heals struct {
	count    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHeals returns the heal collector of a process; subsystem names the
// process ("forwarder", "client"). causes are the values of the cause
// label, whose series are created at zero.
func NewHeals(subsystem string, causes ...string) *Heals {
	h := &Heals{
		count: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: subsystem, Name: "heals_total",
			Help: "Connections healed: moved to another member after theirs failed or left, by cause.",
		}, []string{"cause"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: subsystem, Name: "heal_duration_seconds",
			Help:    "How long each heal counted by heals_total took, by cause.",
			Buckets: HealBuckets,
		}, []string{"cause"}),
	}
	for _, c := range causes {
		h.count.WithLabelValues(c)
		h.duration.WithLabelValues(c)
	}
	return h
}

// Observe counts one heal of the given cause that took d.
func (h *Heals) Observe(cause string, d time.Duration) {
	h.count.WithLabelValues(cause).Inc()
	h.duration.WithLabelValues(cause).Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (h *Heals) Describe(ch chan<- *prometheus.Desc) {
	h.count.Describe(ch)
	h.duration.Describe(ch)
}

// Collect implements prometheus.Collector.
func (h *Heals) Collect(ch chan<- prometheus.Metric) {
	h.count.Collect(ch)
	h.duration.Collect(ch)
}
