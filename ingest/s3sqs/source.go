package s3sqs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/awserr"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// SQSAPI is the part of the SQS client the source uses.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// S3API is the part of the S3 client the source uses.
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Defaults of the options, which the configuration's defaults are too.
const (
	DefaultWorkers     = 4
	DefaultMaxReceives = 5
	DefaultVisibility  = 60 * time.Second
	DefaultWaitTime    = 20 * time.Second
)

// Options configures a Source.
type Options struct {
	QueueURL string
	SQS      SQSAPI
	S3       S3API
	// Workers receive and process messages at once (default 4).
	Workers int
	// WaitTime is the long-polling wait (default 20s).
	WaitTime time.Duration
	// Visibility is the visibility timeout the source asks for and keeps
	// extending while it still reads a message's files (default 60s).
	Visibility time.Duration
	// MaxReceives: a message received this many times is reported (log,
	// metric) and left to the queue's dead-letter policy (default 5).
	MaxReceives int
	DataEvents  bool
	Limits      ingest.Limits
	Logger      zerolog.Logger
	Metrics     *Metrics
	// OnError receives unreadable records (for metrics).
	OnError func(pos ingest.Position, err error)
}

// Source reads log files announced through SQS.
type Source struct {
	o Options

	mu      sync.Mutex
	failing string        // why receives fail, since when; "" when they work
	logged  time.Duration // the longest wait already logged
	buckets map[string]*bucketFault
}

// Failing returns the queue's failure when its receives fail (AccessDenied,
// a deleted queue, ...), for /readyz; nil when they work.
func (s *Source) Failing() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if s.failing != "" {
		out = append(out, s.o.QueueURL+": "+s.failing)
	}
	return append(out, s.bucketsFailing()...)
}

// maxReceiveBackoff bounds the wait of a worker whose receives keep failing
// for good (the role lost sqs:ReceiveMessage, the queue is gone).
const maxReceiveBackoff = 10 * time.Minute

// receiveFailed records a failed receive and returns how long to wait. A
// failure retrying cannot fix (AccessDenied, no such queue) waits up to 10
// minutes, any other up to 30 s; the log says so at the first failure and
// when the wait has grown fourfold, not at every failure.
func (s *Source) receiveFailed(err error, wait *backoff.Backoff, log zerolog.Logger) time.Duration {
	reason := awserr.Reason(err)
	s.o.Metrics.receiveErrors.WithLabelValues(reason).Inc()
	if !awserr.Retryable(err) {
		wait.Max = maxReceiveBackoff
	}
	d := wait.Next()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing == "" {
		s.failing = reason + " since " + time.Now().UTC().Format(time.RFC3339)
	}
	if s.logged == 0 || d >= 4*s.logged { // the first failure, then as the wait grows fourfold
		s.logged = d
		log.Warn().Err(err).Str("reason", reason).Dur("retry_in", d).Msg("SQS ReceiveMessage failed; waiting (check the task role's sqs:ReceiveMessage and the queue)")
	}
	return d
}

func (s *Source) receiveWorked(log zerolog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing != "" {
		log.Info().Str("was", s.failing).Msg("SQS receives work again")
		s.failing, s.logged = "", 0
	}
}

// New checks the options and returns a Source.
func New(o Options) (*Source, error) {
	if o.QueueURL == "" || o.SQS == nil || o.S3 == nil {
		return nil, errors.New("s3sqs: queue URL, SQS and S3 clients are required")
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.WaitTime <= 0 {
		o.WaitTime = DefaultWaitTime
	}
	if o.Visibility <= 0 {
		o.Visibility = DefaultVisibility
	}
	if o.MaxReceives <= 0 {
		o.MaxReceives = DefaultMaxReceives
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &Source{o: o}, nil
}

// Run receives with Workers long-polling receivers until ctx ends. A message
// in progress when ctx ends is not deleted: SQS delivers it again.
func (s *Source) Run(ctx context.Context, handle ingest.Handler) error {
	g, ctx := errgroup.WithContext(ctx)
	for i := range s.o.Workers {
		g.Go(func() error { return s.worker(ctx, i, handle) })
	}
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

func (s *Source) worker(ctx context.Context, n int, handle ingest.Handler) error {
	log := s.o.Logger.With().Int("worker", n).Logger()
	wait := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for ctx.Err() == nil {
		out, err := s.o.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(s.o.QueueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: int32(s.o.WaitTime / time.Second),
			VisibilityTimeout:           int32(s.o.Visibility / time.Second),
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff.Sleep(ctx, s.receiveFailed(err, &wait, log))
			continue
		}
		wait.Reset()
		wait.Max = 30 * time.Second
		s.receiveWorked(log)
		// Up to 10 messages a call: each stays invisible while it waits its
		// turn and while its files are read, and those done are deleted
		// together once the last is stored.
		hctx, stopBeats := context.WithCancel(ctx)
		beats := make([]context.CancelFunc, len(out.Messages))
		for i, m := range out.Messages {
			bctx, stop := context.WithCancel(hctx)
			beats[i] = stop
			go s.heartbeat(bctx, m, log)
		}
		var done []types.Message
		var herr error
		for i, m := range out.Messages {
			ok, hold, err := s.message(ctx, m, handle, log)
			if err != nil {
				herr = err
				break
			}
			if ok {
				// Still invisible until the batch's delete: a message done
				// early must not reappear while the others are read.
				done = append(done, m)
				continue
			}
			beats[i]() // left for redelivery
			if hold > 0 {
				s.hold(ctx, m, hold, log)
			}
		}
		s.deleteBatch(ctx, done, log)
		stopBeats()
		if herr != nil {
			return herr
		}
	}
	return nil
}

// message handles one SQS message and reports whether it is done (to be
// deleted). It returns an error only when the pipeline fails; unreadable
// files leave the message for redelivery after hold (0: the visibility
// timeout).
func (s *Source) message(ctx context.Context, m types.Message, handle ingest.Handler, log zerolog.Logger) (bool, time.Duration, error) {
	id := aws.ToString(m.MessageId)
	log = log.With().Str("message_id", id).Logger()
	s.o.Metrics.inFlight.Inc()
	defer s.o.Metrics.inFlight.Dec()
	receives, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	objs, err := ParseNotification([]byte(aws.ToString(m.Body)))
	switch {
	case errors.Is(err, ErrTestEvent):
		s.o.Metrics.messages.WithLabelValues("test_event").Inc()
		return true, 0, nil
	case err != nil:
		s.o.Metrics.messages.WithLabelValues("unreadable").Inc()
		log.Error().Err(err).Int("receives", receives).Msg("SQS message unreadable; left to the queue's dead-letter policy")
		return false, 0, nil
	}
	for _, o := range objs {
		if err := s.object(ctx, o, handle); err != nil {
			if ingest.IsHandlerError(err) {
				return false, 0, err
			}
			if ctx.Err() != nil {
				return false, 0, nil
			}
			return false, s.objectFailed(o, err, receives, log), nil
		}
		s.objectWorked(o.Bucket, log)
	}
	s.o.Metrics.messages.WithLabelValues("done").Inc()
	return true, 0, nil
}

// object streams one log file through the decoder into the pipeline.
func (s *Source) object(ctx context.Context, o Object, handle ingest.Handler) error {
	out, err := s.o.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(o.Bucket), Key: aws.String(o.Key)})
	if err != nil {
		return fmt.Errorf("GetObject s3://%s/%s: %w", o.Bucket, o.Key, err)
	}
	defer out.Body.Close()
	r, release, err := ingest.Decompress(out.Body)
	if err != nil {
		return fmt.Errorf("s3://%s/%s: %w", o.Bucket, o.Key, err)
	}
	defer release()
	source := "s3://" + o.Bucket + "/" + o.Key
	b := &ingest.Batcher{Source: "sqs", Handle: handle}
	dec := ingest.Decoder{Source: source, DataEvents: s.o.DataEvents, Limits: s.o.Limits, OnError: s.o.OnError,
		OnEvent: func(ev *ingest.Event) error { return b.Add(ctx, ev) }}
	st, err := dec.Decode(r)
	if ingest.IsHandlerError(err) {
		return err
	}
	s.o.Metrics.bytes.Add(float64(st.Bytes))
	s.o.Metrics.skipped.Add(float64(st.Records - st.Candidates))
	if ferr := b.Flush(ctx, st, nil); ferr != nil {
		return ferr
	}
	if err != nil {
		// The events read so far are kept (at-least-once); the file is read
		// again on redelivery.
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// heartbeat extends the message's visibility at half the timeout until
// ctx ends.
func (s *Source) heartbeat(ctx context.Context, m types.Message, log zerolog.Logger) {
	t := time.NewTicker(s.o.Visibility / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := s.o.SQS.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(s.o.QueueURL),
			ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: int32(s.o.Visibility / time.Second)})
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("extending the message's visibility failed")
		} else if err == nil {
			s.o.Metrics.extensions.Inc()
		}
	}
}

// deleteBatch deletes messages whose findings are stored, up to 10 a call.
// A message that fails to delete is read again later: its findings are
// stored, so a redelivery only repeats them.
func (s *Source) deleteBatch(ctx context.Context, ms []types.Message, log zerolog.Logger) {
	for len(ms) > 0 && ctx.Err() == nil {
		n := min(len(ms), 10)
		var entries []types.DeleteMessageBatchRequestEntry
		for i, m := range ms[:n] {
			entries = append(entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
		}
		out, err := s.o.SQS.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.o.QueueURL), Entries: entries})
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Int("messages", n).Msg("deleting SQS messages failed; they will be read again")
		case err == nil && len(out.Failed) > 0:
			for _, f := range out.Failed {
				log.Warn().Str("code", aws.ToString(f.Code)).Str("reason", aws.ToString(f.Message)).Msg("deleting an SQS message failed; it will be read again")
			}
		}
		ms = ms[n:]
	}
}

// Metrics are the SQS source's metrics.
type Metrics struct {
	inFlight                           prometheus.Gauge
	messages                           *prometheus.CounterVec
	receiveErrors, objectErrors        *prometheus.CounterVec
	bucketsFailing                     prometheus.Gauge
	gaveUp, extensions, bytes, skipped prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "encwatch_sqs_messages_in_flight", Help: "SQS messages being processed."}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_sqs_messages_total",
			Help: "SQS messages handled, by outcome (done, test_event, unreadable)."}, []string{"outcome"}),
		receiveErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_sqs_receive_errors_total",
			Help: "Failed ReceiveMessage calls, by reason (the AWS error code, or server, network)."}, []string{"reason"}),
		objectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_sqs_object_errors_total",
			Help: "Log files that could not be read (left for redelivery), by reason (the AWS error code, or server, network, other)."}, []string{"reason"}),
		bucketsFailing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "encwatch_sqs_buckets_failing",
			Help: "Trail buckets none of whose log files could be read since their first failure."}),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_sqs_max_receives_total",
			Help: "Messages still failing after maxReceives, left to the queue's dead-letter policy."}),
		extensions: prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_sqs_visibility_extensions_total", Help: "Visibility timeouts extended while reading."}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_sqs_bytes_total", Help: "Decompressed bytes read from S3 log files."}),
		skipped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_sqs_records_skipped_total", Help: "Records skipped by the prefilter."}),
	}
	for _, o := range []string{"done", "test_event", "unreadable"} {
		m.messages.WithLabelValues(o)
	}
	for _, r := range []string{"AccessDenied", "NoSuchKey", "other"} {
		m.objectErrors.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.inFlight, m.messages, m.receiveErrors, m.objectErrors, m.bucketsFailing, m.gaveUp, m.extensions, m.bytes, m.skipped)
	}
	return m
}
