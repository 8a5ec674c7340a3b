package ingest

import "context"

// Batch is a unit of work a source hands to the pipeline: events, and the
// checkpoints that become true once those events' findings are stored.
type Batch struct {
	// Source names the source for logs and metrics (lookup, files, sqs, kafka).
	Source string
	// Events are the encryption events read, in the order to judge them.
	Events []*Event
	// Checkpoints are stored in the same transaction as the findings: key
	// to value, a nil value deletes the key.
	Checkpoints map[string][]byte
	// Stats counts what was read to make the batch.
	Stats Stats
}

// Handler makes a batch durable. It blocks until the findings of every
// event in the batch and the batch's checkpoints are stored together, and
// returns nil only then; a source advances its position upstream (SQS
// delete, Kafka commit) only after Handler returned nil. It may block for a
// long time when the outbox is full (back-pressure); ctx bounds the wait.
// It is safe for concurrent use.
type Handler func(ctx context.Context, b Batch) error

// Checkpoints reads stored checkpoints. A missing key gives nil, nil.
type Checkpoints interface {
	Checkpoint(key string) ([]byte, error)
}
