package inventory

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the scan's Prometheus metrics, labelled by account and
// Region (both bounded by the configuration).
type Metrics struct {
	calls, throttles *prometheus.CounterVec
	errors, read     *prometheus.CounterVec
	duration, last   *prometheus.GaugeVec
	interval         *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_inventory_calls_total",
			Help: "S3 and KMS calls the inventory made, retries included, by API."}, []string{"account", "api"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_inventory_throttles_total",
			Help: "Inventory calls answered with SlowDown, throttling or a server error, and retried after a backoff."}, []string{"account"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_inventory_errors_total",
			Help: "Buckets, keys or listings the inventory could not read, by reason (the AWS error code, or server, network)."},
			[]string{"account", "region", "reason"}),
		read: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_inventory_buckets_read_total",
			Help: "Bucket configurations the inventory read, by bucket type."}, []string{"account", "region", "type"}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_inventory_scan_duration_seconds",
			Help: "How long the last complete scan of an account and Region took."}, []string{"account", "region"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_inventory_last_success_timestamp_seconds",
			Help: "When the last complete scan of an account and Region began (its results are as of then); before the first completes, when the daemon started."}, []string{"account", "region"}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_inventory_interval_seconds",
			Help: "The configured time between two scans of an account and Region (for staleness alerts)."}, []string{"account", "region"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.throttles, m.errors, m.read, m.duration, m.last, m.interval)
	}
	return m
}
