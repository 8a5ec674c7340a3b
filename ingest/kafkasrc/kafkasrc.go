// Package kafkasrc reads CloudTrail records from a Kafka topic as a member
// of a consumer group (github.com/segmentio/kafka-go). A message holds one
// record or {"Records":[...]}. Offsets are committed only after the
// findings of the messages before them are stored; after a crash or a
// rebalance, the group's next owner of a partition reads again from the
// last commit (at-least-once, same alert ids).
package kafkasrc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/encwatch/encwatch/ingest"
)

// Options configures a Source.
type Options struct {
	Brokers []string
	Topic   string
	Group   string
	TLS     *tls.Config
	SASL    sasl.Mechanism
	// MaxBatch and MaxWait bound a batch: up to MaxBatch messages, or what
	// arrived within MaxWait of the first (defaults 500 and 5ms: each
	// event's alert waits at most that long for others, and a backlog
	// fills a batch at once).
	MaxBatch       int
	MaxWait        time.Duration
	SessionTimeout time.Duration // group session timeout (default 30s)
	DataEvents     bool
	Limits         ingest.Limits
	Logger         zerolog.Logger
	Metrics        *Metrics
	OnError        func(pos ingest.Position, err error)
}

// Source reads a topic as a consumer group member.
type Source struct{ o Options }

// New returns a Source.
func New(o Options) (*Source, error) {
	if len(o.Brokers) == 0 || o.Topic == "" || o.Group == "" {
		return nil, errors.New("kafka source: brokers, topic and group are required")
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 500
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Millisecond
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &Source{o: o}, nil
}

// Run consumes until ctx ends. Messages fetched but not yet stored are not
// committed, so they are read again.
func (s *Source) Run(ctx context.Context, handle ingest.Handler) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: s.o.Brokers, Topic: s.o.Topic, GroupID: s.o.Group,
		Dialer:         &kafka.Dialer{Timeout: 10 * time.Second, TLS: s.o.TLS, SASLMechanism: s.o.SASL, ClientID: "encwatch"},
		StartOffset:    kafka.FirstOffset,
		CommitInterval: 0, // commits are explicit, after the pipeline stored a batch
		MinBytes:       1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
		SessionTimeout: s.o.SessionTimeout, HeartbeatInterval: s.o.SessionTimeout / 10,
		RebalanceTimeout: s.o.SessionTimeout,
	})
	defer r.Close()
	for {
		first, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.o.Metrics.fetchErrors.Inc()
			s.o.Logger.Warn().Err(err).Msg("kafka fetch failed")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		msgs := []kafka.Message{first}
		bctx, cancel := context.WithTimeout(ctx, s.o.MaxWait)
		for len(msgs) < s.o.MaxBatch {
			m, err := r.FetchMessage(bctx)
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		cancel()
		if err := s.decode(ctx, msgs, handle); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kafka source: %w", err)
		}
		if err := r.CommitMessages(ctx, msgs...); err != nil && ctx.Err() == nil {
			s.o.Metrics.commitErrors.Inc()
			s.o.Logger.Warn().Err(err).Msg("committing offsets failed; the messages will be read again")
		}
		s.o.Metrics.messages.Add(float64(len(msgs)))
	}
}

// decode hands on the events of fetched messages in batches; the offsets
// are committed after it returned nil.
func (s *Source) decode(ctx context.Context, msgs []kafka.Message, handle ingest.Handler) error {
	b := &ingest.Batcher{Source: "kafka", Handle: handle}
	var total ingest.Stats
	for _, m := range msgs {
		dec := ingest.Decoder{
			Source: fmt.Sprintf("kafka://%s/%d/%d", m.Topic, m.Partition, m.Offset), DataEvents: s.o.DataEvents, Limits: s.o.Limits, OnError: s.o.OnError,
			OnEvent: func(ev *ingest.Event) error { return b.Add(ctx, ev) },
		}
		st, err := dec.Decode(bytes.NewReader(m.Value))
		if ingest.IsHandlerError(err) {
			return err
		}
		if err != nil {
			// The message itself is broken (truncated gzip, too large): what
			// it held before the fault is judged, the fault reported.
			st.Errors++
			pos := ingest.Position{Source: dec.Source, Offset: st.Bytes}
			s.o.Logger.Warn().Err(err).Str("where", pos.String()).Msg("Kafka message unreadable past this point")
			if s.o.OnError != nil {
				s.o.OnError(pos, err)
			}
		}
		total.Add(st)
	}
	return b.Flush(ctx, total, nil)
}

// Metrics are the Kafka source's metrics.
type Metrics struct {
	messages, fetchErrors, commitErrors prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages:     prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_kafka_messages_total", Help: "Kafka messages read and committed."}),
		fetchErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_kafka_fetch_errors_total", Help: "Failed Kafka fetches."}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_kafka_commit_errors_total", Help: "Failed offset commits (the messages are read again)."}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.fetchErrors, m.commitErrors)
	}
	return m
}
