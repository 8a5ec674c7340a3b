package repartition

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// SourceName names the judged batches in logs and metrics.
const SourceName = "repartition"

// Source judges the partitions of the repartition topic the consumer
// group assigns this task.
type Source struct{ o Options }

// NewSource returns a Source.
func NewSource(o Options) (*Source, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	return &Source{o: o}, nil
}

// CheckpointKey is where a task stores the next offset of a partition its
// state has judged.
func CheckpointKey(topic string, partition int) string {
	return "repartition/" + topic + "/" + strconv.Itoa(partition)
}

// Run takes part in the consumer group until ctx ends. Each generation's
// partitions are read by one goroutine each; a rebalance ends them and
// starts the next generation's.
func (s *Source) Run(ctx context.Context, handle ingest.Handler) error {
	g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: s.o.Group, Brokers: s.o.Brokers, Dialer: s.o.dialer(), Topics: []string{s.o.Topic},
		StartOffset: kafka.FirstOffset, SessionTimeout: s.o.SessionTimeout, HeartbeatInterval: s.o.SessionTimeout / 10,
		RebalanceTimeout: s.o.SessionTimeout, JoinGroupBackoff: time.Second, WatchPartitionChanges: true,
	})
	if err != nil {
		return fmt.Errorf("repartition: %w", err)
	}
	defer g.Close()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var failed error
	fail := func(err error) { once.Do(func() { failed = err; cancel() }) }
	wait := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		gen, err := g.Next(rctx)
		if rctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
			return failed
		}
		if err != nil {
			s.o.Logger.Warn().Err(err).Msg("joining the repartition consumer group failed; trying again")
			backoff.Sleep(rctx, wait.Next())
			continue
		}
		wait.Reset()
		n, err := Partitions(rctx, s.o)
		if err != nil {
			s.o.Logger.Warn().Err(err).Msg("reading the repartition topic's partitions failed")
			continue // the generation ends with the session; the next one tries again
		}
		as := gen.Assignments[s.o.Topic]
		s.o.Metrics.assigned.Set(float64(len(as)))
		s.o.Logger.Info().Int32("generation", gen.ID).Int("partitions", len(as)).Int("of", n).Msg("repartition partitions assigned")
		for _, a := range as {
			gen.Start(func(gctx context.Context) {
				pctx, stop := context.WithCancel(rctx)
				defer stop()
				defer context.AfterFunc(gctx, stop)()
				if err := s.partition(pctx, gen, a, n, handle); err != nil {
					fail(err)
				}
			})
		}
	}
}

// Plan says where a partition's reading starts and up to which offset it
// only rebuilds state: from the task's own next offset when it has one,
// else from the oldest retained message, replaying what lies before the
// group's commit (which another task judged). kafka-go gives a negative
// committed offset when the group has none.
func Plan(local, committed int64) (start, replayUntil int64) {
	switch {
	case committed < 0 && local < 0:
		return kafka.FirstOffset, -1
	case committed < 0:
		return local, -1
	case local < 0:
		return kafka.FirstOffset, committed
	case local < committed:
		return local, committed
	default: // this task stored past the commit (killed before committing)
		return local, -1
	}
}

// partition reads one assigned partition until ctx ends.
func (s *Source) partition(ctx context.Context, gen *kafka.Generation, a kafka.PartitionAssignment, n int, handle ingest.Handler) error {
	key := CheckpointKey(s.o.Topic, a.ID)
	local := int64(-1)
	if v, err := s.o.Checkpoints.Checkpoint(key); err != nil {
		return fmt.Errorf("repartition: reading checkpoint %s: %w", key, err)
	} else if v != nil {
		if local, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			local = -1
		}
	}
	start, replayUntil := Plan(local, a.Offset)
	s.o.Logger.Info().Int("partition", a.ID).Int64("own_offset", local).Int64("committed", a.Offset).Int64("start", start).
		Int64("replay_until", replayUntil).Msg("judging a repartition partition")
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.o.Brokers, Topic: s.o.Topic, Partition: a.ID, Dialer: s.o.dialer(),
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		return fmt.Errorf("repartition: partition %d: %w", a.ID, err)
	}
	owns := func(account string) bool { return PartitionOf(account, n) == a.ID }
	wait := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	var held *kafka.Message // fetched, but belongs to the next batch
	for {
		var first kafka.Message
		if held != nil {
			first, held = *held, nil
		} else {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.o.Logger.Warn().Err(err).Int("partition", a.ID).Msg("fetching from the repartition topic failed")
				backoff.Sleep(ctx, wait.Next())
				continue
			}
			first = m
		}
		wait.Reset()
		msgs := []kafka.Message{first}
		replay := first.Offset < replayUntil
		bctx, cancel := context.WithTimeout(ctx, s.o.MaxWait)
		for len(msgs) < s.o.MaxBatch {
			m, err := r.FetchMessage(bctx)
			if err != nil {
				break
			}
			if replay != (m.Offset < replayUntil) { // a batch is all replay or all judged
				held = &m
				break
			}
			msgs = append(msgs, m)
		}
		cancel()
		b := s.batch(msgs, key, replay, owns)
		if err := handle(ctx, b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &ingest.HandlerError{Err: fmt.Errorf("%d events from %s partition %d: %w", len(b.Events), s.o.Topic, a.ID, err)}
		}
		next := msgs[len(msgs)-1].Offset + 1
		if replay {
			s.o.Metrics.replayed.Add(float64(len(msgs)))
			continue // the group's commit is already past them
		}
		s.o.Metrics.consumed.Add(float64(len(msgs)))
		if err := gen.CommitOffsets(map[string]map[int]int64{s.o.Topic: {a.ID: next}}); err != nil && ctx.Err() == nil {
			s.o.Metrics.commitErrors.Inc()
			s.o.Logger.Warn().Err(err).Int("partition", a.ID).Msg("committing a repartition offset failed; the next owner reads those events again")
		}
	}
}

// batch decodes fetched messages into one batch, in the partition's order;
// a message that is not a valid event is reported and skipped.
func (s *Source) batch(msgs []kafka.Message, key string, replay bool, owns func(string) bool) ingest.Batch {
	b := ingest.Batch{Source: SourceName, Replay: replay, Owns: owns,
		Checkpoints: map[string][]byte{key: []byte(strconv.FormatInt(msgs[len(msgs)-1].Offset+1, 10))}}
	for _, m := range msgs {
		b.Stats.Records++
		b.Stats.Bytes += int64(len(m.Value))
		ev, err := Decode(m.Value, s.o.Limits)
		if err != nil {
			b.Stats.Errors++
			pos := ingest.Position{Source: fmt.Sprintf("kafka://%s/%d/%d", m.Topic, m.Partition, m.Offset)}
			if s.o.OnError != nil {
				s.o.OnError(pos, err)
			}
			continue
		}
		b.Stats.Candidates++
		b.Stats.Events++
		b.Events = append(b.Events, ev)
	}
	return b
}
