// Package kafkasink writes alerts to a Kafka topic with
// github.com/segmentio/kafka-go: one message per alert, keyed by bucket ARN
// so one bucket's alerts stay in order on one partition, with the rule,
// severity and schema as headers, acknowledged by all in-sync replicas.
package kafkasink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/encwatch/encwatch/alert"
)

// Options configures a Sink.
type Options struct {
	Brokers []string
	Topic   string
	TLS     *tls.Config    // nil: plaintext
	SASL    sasl.Mechanism // nil: no authentication
	// WriteTimeout bounds one produce request (default 10s).
	WriteTimeout time.Duration
}

// Sink is the Kafka sink.
type Sink struct {
	o  Options
	w  *kafka.Writer
	tr *kafka.Transport
}

// New checks that the topic exists and returns the sink. A missing topic
// or unreachable brokers are errors that say which.
func New(ctx context.Context, o Options) (*Sink, error) {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	s := &Sink{o: o}
	if err := s.Check(ctx); err != nil {
		return nil, err
	}
	s.tr = &kafka.Transport{TLS: o.TLS, SASL: o.SASL, DialTimeout: 5 * time.Second, ClientID: "encwatch"}
	s.w = &kafka.Writer{
		Addr:         kafka.TCP(o.Brokers...),
		Topic:        o.Topic,
		Balancer:     &kafka.Hash{}, // by key: a bucket's alerts on one partition, in order
		RequiredAcks: kafka.RequireAll,
		// The outbox hands over a batch at a time (SendBatch): up to 1,000
		// messages of a partition go in one produce request; a lone alert
		// goes out after 1 ms.
		BatchSize:    1000,
		BatchTimeout: time.Millisecond,
		WriteTimeout: o.WriteTimeout,
		ReadTimeout:  o.WriteTimeout,
		MaxAttempts:  1, // the outbox retries, with backoff and metrics
		Compression:  kafka.Snappy,
		Transport:    s.tr,
	}
	return s, nil
}

// Name implements alert.Sink.
func (s *Sink) Name() string { return "kafka" }

// Check dials the brokers and reads the topic's partitions. It implements
// alert.Checker for /readyz.
func (s *Sink) Check(ctx context.Context) error {
	d := &kafka.Dialer{Timeout: 5 * time.Second, TLS: s.o.TLS, SASLMechanism: s.o.SASL, ClientID: "encwatch"}
	var last error
	for _, b := range s.o.Brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			last = fmt.Errorf("broker %s: %w", b, err)
			continue
		}
		parts, err := conn.ReadPartitions(s.o.Topic)
		conn.Close()
		var ke kafka.Error
		if errors.As(err, &ke) && ke == kafka.UnknownTopicOrPartition || err == nil && len(parts) == 0 {
			return fmt.Errorf("kafka topic %q does not exist on %s; create it first", s.o.Topic, strings.Join(s.o.Brokers, ","))
		}
		if err != nil {
			last = fmt.Errorf("broker %s: reading topic %q: %w", b, s.o.Topic, err)
			continue
		}
		return nil
	}
	return fmt.Errorf("kafka: no broker answered: %w", last)
}

// Send implements alert.Sink: it returns once every in-sync replica has the
// message.
func message(d alert.Delivery) kafka.Message {
	key := d.Alert.Bucket.ARN
	if key == "" {
		key = d.Alert.Bucket.Name
	}
	return kafka.Message{Key: []byte(key), Value: d.Body, Headers: []kafka.Header{
		{Key: "rule", Value: []byte(d.Alert.Rule)},
		{Key: "severity", Value: []byte(d.Alert.Severity)},
		{Key: "schema", Value: []byte(d.Alert.Schema)},
		{Key: "alert-id", Value: []byte(d.Alert.ID)},
	}}
}

// Send implements alert.Sink: one message, acknowledged by all in-sync
// replicas.
func (s *Sink) Send(ctx context.Context, d alert.Delivery) error {
	return s.SendBatch(ctx, []alert.Delivery{d})[0]
}

// SendBatch implements alert.BatchSink: the messages go in as few produce
// requests as their partitions allow, each acknowledged by all in-sync
// replicas; a bucket's messages keep their order on its partition.
func (s *Sink) SendBatch(ctx context.Context, ds []alert.Delivery) []error {
	msgs := make([]kafka.Message, len(ds))
	for i, d := range ds {
		msgs[i] = message(d)
	}
	errs := make([]error, len(ds))
	err := s.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return errs
	}
	var we kafka.WriteErrors
	if !errors.As(err, &we) || len(we) != len(ds) {
		for i := range errs {
			errs[i] = wrap(err)
		}
		return errs
	}
	for i, e := range we {
		if e != nil {
			errs[i] = wrap(e)
		}
	}
	return errs
}

func wrap(err error) error {
	if permanent(err) {
		return alert.Permanent(fmt.Errorf("kafka rejected the alert: %w", err))
	}
	return fmt.Errorf("kafka: %w", err)
}

func permanent(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kafka.MessageSizeTooLarge, kafka.InvalidMessage, kafka.InvalidMessageSize, kafka.InvalidRecord, kafka.InvalidRequiredAcks:
		return true
	}
	return false
}

// Close flushes and closes the writer and its connections.
func (s *Sink) Close() error {
	err := s.w.Close()
	s.tr.CloseIdleConnections()
	return err
}
