package alert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Sink delivers alerts to one destination.
//
// Send blocks until the destination has accepted the alert, and returns
// nil only then. An error that wraps ErrPermanent means retrying cannot
// help (a 4xx answer, a rejected message): the alert goes to the dead
// letters with the error as the reason. Any other error is retried with
// backoff. ctx bounds one attempt. The outbox calls Send from one goroutine
// per sink, in outbox order.
type Sink interface {
	Name() string
	Send(ctx context.Context, d Delivery) error
}

// BatchSink is implemented by sinks that send many alerts in one request
// (Kafka: one produce per partition). SendBatch returns one error per
// delivery, in order (nil: accepted), or nil when all were accepted;
// errors follow Send's rules (ErrPermanent or retryable). Deliveries are
// in outbox order, and a sink keeps that order per key.
type BatchSink interface {
	Sink
	SendBatch(ctx context.Context, ds []Delivery) []error
}

// Checker is implemented by sinks that can say whether their destination
// is reachable, for /readyz.
type Checker interface {
	Check(ctx context.Context) error
}

// Delivery is one alert handed to a sink: the alert and its JSON encoding,
// which is what the sink sends.
type Delivery struct {
	Alert Alert
	Body  []byte
}

// ErrPermanent marks errors that retrying cannot fix.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err as permanent.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// IsPermanent reports whether err is permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// RetryAfter is implemented by errors that carry a server's Retry-After
// (an HTTP 429 or 503): the outbox waits at least that long before the
// next try.
type RetryAfter interface{ RetryAfter() time.Duration }

// RetryAfterOf returns the wait an error asks for, if it asks for one.
func RetryAfterOf(err error) (time.Duration, bool) {
	var ra RetryAfter
	if errors.As(err, &ra) {
		return ra.RetryAfter(), true
	}
	return 0, false
}

// Stdout writes alert v1 JSON lines to a stream; it is the stdout sink.
type Stdout struct {
	mu sync.Mutex
	w  io.Writer
}

// NewStdout returns a sink that writes to w (the process's stdout).
func NewStdout(w io.Writer) *Stdout { return &Stdout{w: w} }

// Name implements Sink.
func (s *Stdout) Name() string { return "stdout" }

// Send implements Sink: one line, written whole.
func (s *Stdout) Send(_ context.Context, d Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := append(append(make([]byte, 0, len(d.Body)+1), d.Body...), '\n')
	_, err := s.w.Write(line)
	return err
}
