package daemon

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// pipeline judges batches and stores their findings, bucket state and
// checkpoints in one transaction: the source may advance once it returns.
type pipeline struct {
	db      *bolt.DB
	engine  atomic.Pointer[rules.Engine]
	outbox  *outbox.Outbox
	now     func() time.Time
	metrics *pipelineMetrics
	state   *stateCollector
	log     zerolog.Logger
}

type pipelineMetrics struct {
	events, findings, skipped, decodeErrors *prometheus.CounterVec
	customErrors, reloads, kmsCopies        *prometheus.CounterVec
	lag                                     *prometheus.GaugeVec
	storeSeconds                            prometheus.Histogram
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
	m.customErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_custom_rule_errors_total",
		Help: "Custom rules that failed on an event (evaluation error or cost limit), by rule; the rule is skipped for that event."}, []string{"rule", "reason"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_config_reloads_total",
		Help: "Reloads of the policy and custom rules, by result (success, failure)."}, []string{"result"})
	m.kmsCopies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_kms_copy_requests_total",
		Help: "SSE-KMS copies involving a directory bucket (each a KMS request), by the bucket type of the copy's target."}, []string{"bucket_type"})
	for _, t := range []string{"directory", "general-purpose"} {
		m.kmsCopies.WithLabelValues(t)
	}
	reg.MustRegister(m.events, m.findings, m.skipped, m.decodeErrors, m.lag, m.storeSeconds, m.customErrors, m.reloads, m.kmsCopies)
	return m
}

// timerSource names the batches the pipeline sends itself to close the
// windows of grouped rules.
const timerSource = "timer"

// windowSlack is how long past its end a window stays open for late events.
const windowSlack = 15 * time.Minute

// expireLoop closes ended windows every interval until ctx ends.
func (p *pipeline) expireLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.handle(ctx, ingest.Batch{Source: timerSource}); err != nil && ctx.Err() == nil {
				// The windows stay stored; the next tick tries again.
				p.log.Error().Err(err).Msg("closing ended data-event windows failed")
			}
		}
	}
}

// handle is the ingest.Handler every source calls.
func (p *pipeline) handle(ctx context.Context, b ingest.Batch) error {
	if err := p.outbox.Wait(ctx); err != nil {
		return err
	}
	start := time.Now()
	now := p.now()
	var found []rules.Finding
	engine := p.engine.Load() // one policy for the whole batch, even during a reload
	err := p.db.Update(func(tx *bolt.Tx) error {
		found = found[:0]
		st := rules.TxState{Tx: tx}
		if b.Source == timerSource {
			// Close the windows of grouped rules that a quiet stream left
			// open; the slack lets late events still join their window.
			fs, err := engine.Expire(st, now.Add(-windowSlack))
			if err != nil {
				return err
			}
			for _, f := range fs {
				if _, err := p.outbox.Put(tx, alert.New(f, now)); err != nil {
					return fmt.Errorf("outbox: %w", err)
				}
			}
			found = append(found, fs...)
		}
		for _, ev := range b.Events {
			fs, err := engine.EvaluateIn(st, ev)
			if err != nil {
				return err
			}
			for _, f := range fs {
				if _, err := p.outbox.Put(tx, alert.New(f, now)); err != nil {
					return fmt.Errorf("outbox: %w", err)
				}
			}
			found = append(found, fs...)
		}
		return ingest.PutCheckpoints(tx, b.Checkpoints)
	})
	if err != nil {
		return fmt.Errorf("storing a batch of %d events from %s: %w", len(b.Events), b.Source, err)
	}
	p.metrics.storeSeconds.Observe(time.Since(start).Seconds())
	var newest time.Time
	for _, ev := range b.Events {
		p.metrics.events.WithLabelValues(b.Source, ev.Name).Inc()
		if ev.Time.After(newest) {
			newest = ev.Time
		}
	}
	if !newest.IsZero() {
		p.metrics.lag.WithLabelValues(b.Source).Set(float64(newest.Unix()))
	}
	if p.state != nil {
		p.state.observe(b.Source, newest, len(b.Checkpoints) > 0)
	}
	for _, f := range found {
		p.metrics.findings.WithLabelValues(f.Rule, f.Severity.String()).Inc()
	}
	return nil
}

// init creates a source's series at zero, so that dashboards and alerts
// see the source before its first event.
func (m *pipelineMetrics) init(source string) {
	for _, name := range []string{ingest.PutBucketEncryption, ingest.GetBucketEncryption, ingest.DeleteBucketEncryption} {
		m.events.WithLabelValues(source, name)
	}
	m.skipped.WithLabelValues(source)
	m.decodeErrors.WithLabelValues(source, "syntax")
	for _, r := range rules.Catalogue {
		m.findings.WithLabelValues(r.ID, r.Severity.String())
	}
}
