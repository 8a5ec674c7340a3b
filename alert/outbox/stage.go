package outbox

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// Each sink is sent to through small stages, as Alertmanager's notify
// stages wrap its integrations: the sinks only speak their protocol, and
// the outbox only keeps alerts durable. The filter on what a sink takes
// (minimum severity, rules) is Queue.Accept, applied when alerts are put,
// so a sink's queue never holds what it would not send.
func (ob *Outbox) stages(name string, log zerolog.Logger) alert.Sink {
	m := ob.o.Metrics
	return retry{
		next: instrumented{next: ob.queues[name].Sink, m: m}, min: ob.o.MinBackoff, max: ob.o.MaxBackoff, timeout: ob.o.SendTimeout,
		onRetry: func(d alert.Delivery, err error, wait time.Duration) {
			m.retries.WithLabelValues(name).Inc()
			log.Warn().Err(err).Str("alert_id", d.Alert.ID).Dur("retry_in", wait).Msg("sink did not take the alert; retrying")
		},
	}
}

// retry sends until the sink accepts the alert, rejects it for good, or ctx
// ends, waiting between tries with backoff and jitter (or the server's
// Retry-After, up to max). Each try has its own timeout.
type retry struct {
	next              alert.Sink
	min, max, timeout time.Duration
	onRetry           func(d alert.Delivery, err error, wait time.Duration)
}

func (r retry) Name() string { return r.next.Name() }

func (r retry) Send(ctx context.Context, d alert.Delivery) error {
	b := backoff.Backoff{Min: r.min, Max: r.max}
	for {
		tctx, cancel := context.WithTimeout(ctx, r.timeout)
		err := r.next.Send(tctx, d)
		cancel()
		if err == nil || alert.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		wait := b.Next()
		if ra, ok := alert.RetryAfterOf(err); ok && ra > wait {
			wait = min(ra, r.max)
		}
		r.onRetry(d, err, wait)
		if !backoff.Sleep(ctx, wait) {
			return err
		}
	}
}

// instrumented counts each failed try by kind (retryable, permanent).
type instrumented struct {
	next alert.Sink
	m    *Metrics
}

func (i instrumented) Name() string { return i.next.Name() }

func (i instrumented) Send(ctx context.Context, d alert.Delivery) error {
	err := i.next.Send(ctx, d)
	switch {
	case err == nil:
	case alert.IsPermanent(err):
		i.m.failed.WithLabelValues(i.next.Name(), "permanent").Inc()
	case context.Cause(ctx) != context.Canceled:
		// A try cut short because the worker stopped is not the sink's
		// failure; one that timed out is.
		i.m.failed.WithLabelValues(i.next.Name(), "retryable").Inc()
	}
	return err
}

// batchStages is the retry and instrumentation of a BatchSink.
func (ob *Outbox) batchStages(name string, log zerolog.Logger) batchRetry {
	m := ob.o.Metrics
	return batchRetry{next: ob.queues[name].Sink.(alert.BatchSink), name: name, m: m, min: ob.o.MinBackoff, max: ob.o.MaxBackoff, timeout: ob.o.SendTimeout,
		onRetry: func(n int, err error, wait time.Duration) {
			m.retries.WithLabelValues(name).Add(float64(n))
			log.Warn().Err(err).Int("alerts", n).Dur("retry_in", wait).Msg("sink did not take a batch of alerts; retrying them")
		}}
}

// batchRetry sends a batch until every alert in it was accepted or
// rejected for good, or ctx ends; those that failed otherwise are sent
// again, together, after a backoff with jitter (or the Retry-After).
type batchRetry struct {
	next              alert.BatchSink
	name              string
	m                 *Metrics
	min, max, timeout time.Duration
	onRetry           func(n int, err error, wait time.Duration)
}

func (r batchRetry) sendAll(ctx context.Context, ds []alert.Delivery) []error {
	results := make([]error, len(ds))
	pending := make([]int, len(ds))
	for i := range pending {
		pending[i] = i
	}
	b := backoff.Backoff{Min: r.min, Max: r.max}
	for {
		sub := make([]alert.Delivery, len(pending))
		for j, i := range pending {
			sub[j] = ds[i]
		}
		tctx, cancel := context.WithTimeout(ctx, r.timeout)
		errs := r.next.SendBatch(tctx, sub)
		cancel()
		var again []int
		var last error
		for j, i := range pending {
			var err error
			if errs != nil {
				err = errs[j]
			}
			switch {
			case err == nil:
			case alert.IsPermanent(err):
				r.m.failed.WithLabelValues(r.name, "permanent").Inc()
			default:
				if ctx.Err() == nil {
					r.m.failed.WithLabelValues(r.name, "retryable").Inc()
				}
				again, last = append(again, i), err
				continue
			}
			results[i] = err
		}
		if len(again) == 0 {
			return results
		}
		wait := b.Next()
		if ra, ok := alert.RetryAfterOf(last); ok && ra > wait {
			wait = min(ra, r.max)
		}
		if ctx.Err() == nil {
			r.onRetry(len(again), last, wait)
		}
		if ctx.Err() != nil || !backoff.Sleep(ctx, wait) {
			for _, i := range again {
				results[i] = last
			}
			return results
		}
		pending = again
	}
}
