package ingest

import (
	"context"
	"errors"
	"fmt"
)

// Source reads CloudTrail records from one place (LookupEvents, SQS and S3,
// Kafka, files) and hands their events to the pipeline.
//
// Run reads until ctx ends, and returns nil then. A source with an end
// (files without watch) returns nil once it has handed on everything. Run
// calls h with one batch at a time per reader (a source with several
// readers calls it concurrently; a Handler is safe for that), and advances
// its position upstream (an SQS delete, a Kafka commit, a checkpoint) only
// after h returned nil for every batch read before that position: what h
// has not accepted is read again after a restart. Bad records are reported
// through the source's OnError and skipped, never returned. When h fails,
// Run stops and returns a *HandlerError wrapping h's error; any other error
// means the source itself cannot go on.
type Source interface {
	Run(ctx context.Context, h Handler) error
}

// HandlerError is what a Source's Run returns when the Handler failed:
// the pipeline could not store a batch, so the source stopped without
// advancing past it.
type HandlerError struct{ Err error }

func (e *HandlerError) Error() string { return "handing on a batch: " + e.Err.Error() }

func (e *HandlerError) Unwrap() error { return e.Err }

// IsHandlerError reports whether err is, or wraps, a *HandlerError.
func IsHandlerError(err error) bool {
	var he *HandlerError
	return errors.As(err, &he)
}

// DefaultBatchSize is how many events a Batcher gathers before it hands
// them on: large enough to share one transaction, small enough that a
// batch is stored quickly.
const DefaultBatchSize = 512

// Batcher gathers the events of one input into batches of at most Size,
// sorted by eventTime (records in a CloudTrail file are in no order), and
// hands each to its Handler. Every reader uses one per input, so batch
// size and ordering are the same for every source. Not safe for
// concurrent use.
type Batcher struct {
	// Source names the source in the batches (lookup, files, sqs, kafka).
	Source string
	// Size bounds a batch (default DefaultBatchSize).
	Size   int
	Handle Handler

	events []*Event
}

// Add adds an event, handing on a full batch. Its error is a *HandlerError.
func (b *Batcher) Add(ctx context.Context, ev *Event) error {
	b.events = append(b.events, ev)
	size := b.Size
	if size <= 0 {
		size = DefaultBatchSize
	}
	if len(b.events) < size {
		return nil
	}
	return b.hand(ctx, Batch{})
}

// Flush hands on what was gathered as the input's last batch, with the
// input's stats and the checkpoints that become true once it is stored,
// even when no event was gathered (so that the checkpoint is stored). Its
// error is a *HandlerError.
func (b *Batcher) Flush(ctx context.Context, st Stats, checkpoints map[string][]byte) error {
	return b.hand(ctx, Batch{Stats: st, Checkpoints: checkpoints})
}

// Take returns what was gathered, sorted, without handing it on: for a
// reader that hands on the last batch itself.
func (b *Batcher) Take() []*Event {
	evs := b.events
	b.events = nil
	SortByTime(evs)
	return evs
}

func (b *Batcher) hand(ctx context.Context, batch Batch) error {
	batch.Source, batch.Events = b.Source, b.Take()
	if err := b.Handle(ctx, batch); err != nil {
		return &HandlerError{Err: fmt.Errorf("%d events from %s: %w", len(batch.Events), b.Source, err)}
	}
	return nil
}
