package lookup

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the tailer's Prometheus metrics, labelled by Region only so
// that label sets stay bounded.
type Metrics struct {
	calls, throttles, decodeErrors *prometheus.CounterVec
	errors, events                 *prometheus.CounterVec
	checkpoint                     *prometheus.GaugeVec
	failing                        *prometheus.GaugeVec
	pollFailures                   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_calls_total",
			Help: "LookupEvents calls made, retries included."}, []string{"region"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_throttles_total",
			Help: "LookupEvents calls answered with throttling."}, []string{"region"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_errors_total",
			Help: "LookupEvents calls that failed other than by throttling, by kind (server, network, permanent)."}, []string{"region", "kind"}),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_decode_errors_total",
			Help: "CloudTrailEvent strings that could not be decoded."}, []string{"region"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_events_total",
			Help: "New encryption events read from LookupEvents."}, []string{"region", "event"}),
		checkpoint: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_lookup_checkpoint_timestamp_seconds",
			Help: "Time up to which LookupEvents has been read completely."}, []string{"region"}),
	}
	m.failing = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_lookup_target_failing",
		Help: "1 while the polls of an account and Region fail (AccessDenied, an expired or revoked role, ...); they back off to minutes meanwhile."},
		[]string{"account", "region"})
	m.pollFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_lookup_poll_failures_total",
		Help: "Failed polls of an account and Region, by reason (the AWS error code, or server, network)."}, []string{"account", "region", "reason"})
	if reg != nil {
		reg.MustRegister(m.calls, m.throttles, m.errors, m.decodeErrors, m.events, m.checkpoint, m.failing, m.pollFailures)
	}
	return m
}

// init creates a Region's series at zero.
func (m *Metrics) init(region string) {
	m.calls.WithLabelValues(region)
	m.throttles.WithLabelValues(region)
	for _, k := range []string{"server", "network", "permanent"} {
		m.errors.WithLabelValues(region, k)
	}
	m.decodeErrors.WithLabelValues(region)
	for _, n := range eventNames {
		m.events.WithLabelValues(region, n)
	}
}
