package repartition

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// Options configures a Publisher and a Source.
type Options struct {
	Brokers []string
	Topic   string
	// Group is the consumer group of the judging tasks.
	Group string
	TLS   *tls.Config
	SASL  sasl.Mechanism
	// Limits bound what a message may hold.
	Limits ingest.Limits
	// Checkpoints is where the Source reads how far its own state got on
	// each partition.
	Checkpoints    ingest.Checkpoints
	SessionTimeout time.Duration // group session timeout (default 30s)
	// MaxBatch and MaxWait bound a judged batch (defaults 500, 5ms).
	MaxBatch int
	MaxWait  time.Duration
	Logger   zerolog.Logger
	Metrics  *Metrics
	OnError  func(pos ingest.Position, err error)
}

func (o *Options) defaults() error {
	if len(o.Brokers) == 0 || o.Topic == "" || o.Group == "" {
		return errors.New("pipeline.repartition.kafka: brokers, topic and group are required")
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 500
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Millisecond
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return nil
}

func (o *Options) dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: 10 * time.Second, TLS: o.TLS, SASLMechanism: o.SASL, ClientID: "encwatch"}
}

// Partitions reads how many partitions the topic has; a missing topic is
// an error that says so.
func Partitions(ctx context.Context, o Options) (int, error) {
	var last error
	for _, b := range o.Brokers {
		parts, err := o.dialer().LookupPartitions(ctx, "tcp", b, o.Topic)
		var ke kafka.Error
		if errors.As(err, &ke) && ke == kafka.UnknownTopicOrPartition || err == nil && len(parts) == 0 {
			return 0, fmt.Errorf("kafka topic %q does not exist on %s; create it first (pipeline.repartition.kafka.topic)", o.Topic, strings.Join(o.Brokers, ","))
		}
		if err != nil {
			last = fmt.Errorf("broker %s: reading topic %q: %w", b, o.Topic, err)
			continue
		}
		return len(parts), nil
	}
	return 0, fmt.Errorf("pipeline.repartition.kafka: no broker answered: %w", last)
}

// PartitionOf is the partition of n an account's events go to: the
// FNV-1a hash of the account, as kafka-go's Hash balancer (and Sarama's)
// computes it. An event without an account goes where the key "-" does.
func PartitionOf(account string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key(account)))
	p := int32(h.Sum32()) % int32(n)
	if p < 0 {
		p = -p
	}
	return int(p)
}

func key(account string) string {
	if account == "" {
		return "-"
	}
	return account
}

// partitionHeader, on a copy of a KMS event, names the partition it goes to.
const partitionHeader = "encwatch-partition"

// balancer sends a message to the partition its header names (the copies
// of a KMS event), else to its account's.
type balancer struct{}

func (balancer) Balance(m kafka.Message, partitions ...int) int {
	for _, h := range m.Headers {
		if h.Key == partitionHeader {
			if i, err := strconv.Atoi(string(h.Value)); err == nil {
				return partitions[i%len(partitions)]
			}
		}
	}
	return partitions[PartitionOf(string(m.Key), len(partitions))]
}

// Publisher hands the events a source decoded to the topic instead of
// judging them here.
type Publisher struct {
	o  Options
	w  *kafka.Writer
	tr *kafka.Transport

	mu     sync.Mutex
	parts  int
	partAt time.Time
	// failing says why publishes fail, since when ("" while they work).
	failing string
}

// Failing names the topic while publishes to it fail, for /readyz and the
// web page; nil while they work.
func (p *Publisher) Failing() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failing == "" {
		return nil
	}
	return []string{"kafka topic " + p.o.Topic + ": " + p.failing}
}

func (p *Publisher) setFailing(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err == nil:
		p.failing = ""
	case p.failing == "":
		p.failing = err.Error() + " since " + time.Now().UTC().Format(time.RFC3339)
	}
}

// NewPublisher checks the topic and returns a Publisher.
func NewPublisher(ctx context.Context, o Options) (*Publisher, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	n, err := Partitions(ctx, o)
	if err != nil {
		return nil, err
	}
	p := &Publisher{o: o, parts: n, partAt: time.Now(),
		tr: &kafka.Transport{TLS: o.TLS, SASL: o.SASL, DialTimeout: 5 * time.Second, ClientID: "encwatch"}}
	p.w = &kafka.Writer{
		Addr: kafka.TCP(o.Brokers...), Topic: o.Topic, Balancer: balancer{},
		RequiredAcks: kafka.RequireAll, // the source advances only once every in-sync replica has them
		BatchSize:    1000, BatchTimeout: time.Millisecond,
		WriteTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		MaxAttempts: 1, // Handler retries what failed, and only that
		Compression: kafka.Snappy,
		Transport:   p.tr,
	}
	return p, nil
}

// Close closes the writer and its connections.
func (p *Publisher) Close() error {
	err := p.w.Close()
	p.tr.CloseIdleConnections()
	return err
}

// partitions is the topic's partition count, read again every minute.
func (p *Publisher) partitions(ctx context.Context) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.partAt) > time.Minute {
		if n, err := Partitions(ctx, p.o); err == nil {
			p.parts = n
		}
		p.partAt = time.Now()
	}
	return p.parts
}

// Handler returns the handler a source calls instead of next: a batch's
// events are published (each acknowledged by every in-sync replica) and
// then its checkpoints and stats are stored through next without the
// events, so the source advances only past what the topic holds. A failed
// publish is retried with backoff until ctx ends; an event the brokers
// refuse for good (too large) is judged here rather than lost.
func (p *Publisher) Handler(next ingest.Handler) ingest.Handler {
	return func(ctx context.Context, b ingest.Batch) error {
		if len(b.Events) > 0 {
			refused, err := p.publish(ctx, b.Events)
			if err != nil {
				return err
			}
			if len(refused) > 0 {
				p.o.Logger.Error().Int("events", len(refused)).Str("origin", refused[0].Origin.String()).
					Msg("Kafka refused repartitioned events for good; judging them on this task instead")
				if err := next(ctx, ingest.Batch{Source: b.Source, Events: refused}); err != nil {
					return err
				}
			}
		}
		return next(ctx, ingest.Batch{Source: b.Source, Checkpoints: b.Checkpoints, Stats: b.Stats})
	}
}

// publish writes the events' messages, retrying those that failed. It
// returns the events Kafka refused for good.
func (p *Publisher) publish(ctx context.Context, evs []*ingest.Event) ([]*ingest.Event, error) {
	var msgs []kafka.Message
	var of []*ingest.Event // the event of each message
	for _, ev := range evs {
		v, err := Encode(ev)
		if err != nil {
			return nil, fmt.Errorf("encoding an event for the repartition topic: %w", err)
		}
		k := []byte(key(ingest.PartitionAccount(ev)))
		if !ev.IsKMSEvent() {
			msgs, of = append(msgs, kafka.Message{Key: k, Value: v}), append(of, ev)
			continue
		}
		for i := range p.partitions(ctx) { // a key may serve buckets of any account
			msgs = append(msgs, kafka.Message{Key: k, Value: v, Headers: []kafka.Header{{Key: partitionHeader, Value: []byte(strconv.Itoa(i))}}})
			of = append(of, ev)
		}
	}
	var refused []*ingest.Event
	seen := map[*ingest.Event]bool{}
	wait := backoff.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for attempt := 1; len(msgs) > 0; attempt++ {
		start := time.Now()
		err := p.w.WriteMessages(ctx, msgs...)
		p.o.Metrics.publishSeconds.Observe(time.Since(start).Seconds())
		if err == nil {
			p.o.Metrics.published.Add(float64(len(msgs)))
			p.setFailing(nil)
			return refused, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var we kafka.WriteErrors
		if !errors.As(err, &we) || len(we) != len(msgs) {
			we = make(kafka.WriteErrors, len(msgs))
			for i := range we {
				we[i] = err
			}
		}
		var again []kafka.Message
		var againOf []*ingest.Event
		for i, e := range we {
			switch {
			case e == nil:
				p.o.Metrics.published.Inc()
			case permanent(e):
				if !seen[of[i]] {
					seen[of[i]] = true
					refused = append(refused, of[i])
				}
			default:
				again, againOf = append(again, msgs[i]), append(againOf, of[i])
			}
		}
		msgs, of = again, againOf
		if len(msgs) == 0 {
			break
		}
		p.setFailing(err)
		p.o.Metrics.publishErrors.Inc()
		d := wait.Next()
		if attempt == 1 || attempt%10 == 0 {
			p.o.Logger.Warn().Err(err).Int("messages", len(msgs)).Int("attempt", attempt).Dur("retry_in", d).
				Msg("publishing to the repartition topic failed; the source waits and tries again")
		}
		if !backoff.Sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
	return refused, nil
}

func permanent(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kafka.MessageSizeTooLarge, kafka.InvalidMessage, kafka.InvalidMessageSize, kafka.InvalidRecord:
		return true
	}
	return false
}

// Metrics are the repartition's metrics.
type Metrics struct {
	published, publishErrors, consumed, replayed, commitErrors prometheus.Counter
	publishSeconds                                             prometheus.Histogram
	assigned                                                   prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published:     prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_repartition_published_total", Help: "Messages published to the repartition topic and acknowledged."}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_repartition_publish_errors_total", Help: "Failed publishes to the repartition topic (retried)."}),
		consumed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_repartition_consumed_total", Help: "Repartitioned messages judged on this task."}),
		replayed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_repartition_replayed_total", Help: "Repartitioned messages read again to rebuild bucket state (another task judged them)."}),
		commitErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_repartition_commit_errors_total", Help: "Failed offset commits on the repartition topic."}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "encwatch_repartition_publish_seconds", Help: "Time to publish one batch to the repartition topic.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "encwatch_repartition_partitions_assigned", Help: "Partitions of the repartition topic this task judges."}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.publishErrors, m.consumed, m.replayed, m.commitErrors, m.publishSeconds, m.assigned)
	}
	return m
}
