package outbox

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the outbox's per-sink metrics.
type Metrics struct {
	sent, retries, deadLetters *prometheus.CounterVec
	failed                     *prometheus.CounterVec
	depth, oldest, full        *prometheus.GaugeVec
	orphaned                   *prometheus.GaugeVec
	latency                    *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_alerts_sent_total",
			Help: "Alerts a sink accepted."}, []string{"sink"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_alerts_failed_total",
			Help: "Failed delivery attempts, by reason (retryable, permanent)."}, []string{"sink", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_alerts_retried_total",
			Help: "Delivery attempts that are retried."}, []string{"sink"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_alerts_dead_lettered_total",
			Help: "Alerts a sink rejected for good, moved to the dead letters."}, []string{"sink"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_outbox_pending",
			Help: "Alerts waiting in the outbox for a sink."}, []string{"sink"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_outbox_oldest_age_seconds",
			Help: "Age of the oldest alert waiting for a sink."}, []string{"sink"}),
		full: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_outbox_full",
			Help: "1 while a sink's outbox queue is full and sources wait."}, []string{"sink"}),
		orphaned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_outbox_orphaned",
			Help: "Alerts found at start in the queue of a sink that is no longer configured (renamed or removed); nobody sends them until `encwatch outbox move` or `drop`."}, []string{"queue"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "encwatch_delivery_latency_seconds",
			Help:    "Time from an alert entering the outbox to its sink accepting it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120, 600}}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.retries, m.deadLetters, m.depth, m.oldest, m.full, m.orphaned, m.latency)
	}
	return m
}

// init creates a sink's series at zero, so that dashboards and alerts see
// the sink before anything happens to it.
func (m *Metrics) init(sink string) {
	m.sent.WithLabelValues(sink)
	m.failed.WithLabelValues(sink, "retryable")
	m.failed.WithLabelValues(sink, "permanent")
	m.retries.WithLabelValues(sink)
	m.deadLetters.WithLabelValues(sink)
	m.latency.WithLabelValues(sink)
	m.oldest.WithLabelValues(sink)
	m.full.WithLabelValues(sink)
}
