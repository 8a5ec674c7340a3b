package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

type pipelineMetrics struct {
	events, findings, skipped, decodeErrors *prometheus.CounterVec
	customErrors, reloads, kmsCopies        *prometheus.CounterVec
	ruleErrors, suppressed                  *prometheus.CounterVec
	quarantined                             *prometheus.CounterVec
	lag                                     *prometheus.GaugeVec
	storeSeconds                            prometheus.Histogram
	eventToAlert                            *prometheus.HistogramVec
}

func newPipelineMetrics(reg prometheus.Registerer) *pipelineMetrics {
	m := &pipelineMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_events_total",
			Help: "Encryption events judged, by source and event name."}, []string{"source", "event"}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_findings_total",
			Help: "Findings raised, by rule and severity."}, []string{"rule", "severity"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_records_skipped_total",
			Help: "Records read and skipped by the prefilter without decoding, by source."}, []string{"source"}),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_decode_errors_total",
			Help: "Records or inputs that could not be read, by source and reason (syntax, truncated, too_large, gzip, ...)."}, []string{"source", "reason"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_source_newest_event_timestamp_seconds",
			Help: "eventTime of the newest event judged, by source; now minus this is the lag."}, []string{"source"}),
		storeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "encwatch_batch_store_seconds",
			Help: "Time to judge a batch and store its findings and checkpoints.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	m.eventToAlert = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "encwatch_event_to_alert_seconds",
		Help:    "From a finding's eventTime to its alert stored in the outbox, by source: CloudTrail's delivery delay plus encwatch's cost (delivery to each sink is encwatch_delivery_latency_seconds).",
		Buckets: []float64{0.01, 0.1, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200}}, []string{"source"})
	m.customErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_custom_rule_errors_total",
		Help: "Custom rules that failed on an event (evaluation error or cost limit), by rule; the rule is skipped for that event."}, []string{"rule", "reason"})
	m.ruleErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_rule_errors_total",
		Help: "Rules, built-in or custom, that failed on an event (an error or a panic), by rule; the rule is skipped for that event, the others run."}, []string{"rule"})
	for _, r := range rules.Catalogue {
		m.ruleErrors.WithLabelValues(r.ID)
	}
	m.suppressed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_findings_suppressed_total",
		Help: "Findings not raised, by rule and reason (unchanged: a Put re-applied the known configuration within policy.repeats.window)."}, []string{"rule", "reason"})
	for _, r := range rules.Catalogue {
		m.suppressed.WithLabelValues(r.ID, "unchanged")
	}
	m.quarantined = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_batches_quarantined_total",
		Help: "Batches (or the events of one) set aside instead of judged, by source: they failed to judge or store, or crashed the process twice; see encwatch quarantine list."}, []string{"source"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_config_reloads_total",
		Help: "Reloads of the policy and custom rules, by result (success, failure)."}, []string{"result"})
	m.kmsCopies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_kms_copy_requests_total",
		Help: "SSE-KMS copies involving a directory bucket (each a KMS request), by the bucket type of the copy's target."}, []string{"bucket_type"})
	for _, t := range []string{"directory", "general-purpose"} {
		m.kmsCopies.WithLabelValues(t)
	}
	reg.MustRegister(m.events, m.findings, m.skipped, m.decodeErrors, m.lag, m.storeSeconds, m.eventToAlert, m.customErrors, m.ruleErrors, m.suppressed, m.quarantined, m.reloads, m.kmsCopies)
	return m
}

// init creates a source's series at zero, so that dashboards and alerts
// see the source before its first event.
func (m *pipelineMetrics) init(source string) {
	for _, name := range []string{ingest.PutBucketEncryption, ingest.GetBucketEncryption, ingest.DeleteBucketEncryption} {
		m.events.WithLabelValues(source, name)
	}
	m.skipped.WithLabelValues(source)
	m.quarantined.WithLabelValues(source)
	m.decodeErrors.WithLabelValues(source, "syntax")
	for _, r := range rules.Catalogue {
		m.findings.WithLabelValues(r.ID, r.Severity.String())
	}
}
