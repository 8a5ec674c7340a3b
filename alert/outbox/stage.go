package outbox

import (
	"context"

	"github.com/encwatch/encwatch/alert"
)

// A sink is tried through a small stage, as Alertmanager's notify stages
// wrap its integrations: the sinks only speak their protocol, and the
// outbox keeps alerts durable and retries (deliver). The filter on what a
// sink takes (minimum severity, rules) is Queue.Accept, applied when
// alerts are put, so a sink's queue never holds what it would not send.

// instrumented counts each failed try by kind (retryable, permanent).
type instrumented struct {
	next alert.Sink
	m    *Metrics
}

func (i instrumented) Name() string { return i.next.Name() }

func (i instrumented) Send(ctx context.Context, d alert.Delivery) error {
	err := i.next.Send(ctx, d)
	i.count(ctx, err)
	return err
}

// count counts one try's failure.
func (i instrumented) count(ctx context.Context, err error) {
	switch {
	case err == nil:
	case alert.IsPermanent(err):
		i.m.failed.WithLabelValues(i.next.Name(), "permanent").Inc()
	case context.Cause(ctx) != context.Canceled:
		// A try cut short because the worker stopped is not the sink's
		// failure; one that timed out is.
		i.m.failed.WithLabelValues(i.next.Name(), "retryable").Inc()
	}
}
