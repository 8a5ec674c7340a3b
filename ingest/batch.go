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
	// Replay marks events another encwatch task already judged (a
	// repartitioned stream read again to rebuild bucket state): they update
	// the state and windows, and their findings are not stored.
	Replay bool
	// Owns, when set, keeps only the findings about buckets of the accounts
	// it owns (a KMS event is handed to every partition of a repartitioned
	// stream; each owner alerts for its own buckets).
	Owns func(account string) bool
}

// PartitionAccount is the account an event belongs to when events are
// partitioned by account: the bucket's, else the record's.
func PartitionAccount(ev *Event) string {
	if ev.Bucket.Account != "" {
		return ev.Bucket.Account
	}
	return ev.Account
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
