package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// The state is one bbolt file, state.dir/encwatch.db. Its top-level
// tables (bbolt calls them buckets; here a bucket is always an S3 bucket)
// and the package that owns each:
//
//	table        owner          key → value
//	checkpoints  ingest         source position key → the source's checkpoint (JSON)
//	buckets      rules          rules.StateKey of an S3 bucket → rules.BucketState (JSON)
//	groups       rules          grouped rule's window key → rules.Group (JSON)
//	reads        rules          account|caller → rules.Reads, the read-burst window (JSON)
//	outbox       alert/outbox   one table per sink → sequence → outbox.Entry (JSON)
//	deadletter   alert/outbox   one table per sink → sequence → outbox.Entry with its reason
//	inflight     cmd/daemon     sequence → the batch being judged (digests of its events)
//	suspects     cmd/daemon     event digest → crashes it was in flight at
//	quarantine   cmd/daemon     sequence → Quarantined, a batch set aside
//
// One transaction per batch writes the findings (outbox), what the rules
// learned (buckets, groups, reads) and the source's checkpoint, so they are
// stored together or not at all.
var stateTables = [][]byte{ingest.CheckpointTable, rules.BucketStateTable, rules.GroupTable, rules.ReadsTable,
	outbox.QueueTable, outbox.DeadLetterTable, inflightTable, suspectsTable, quarantineTable}

// openState opens the bbolt database in the state folder. The file lock
// keeps a second daemon off the same state.
func openState(dir string) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state.dir: %w", err)
	}
	path := filepath.Join(dir, "encwatch.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("state %s is in use by another encwatch process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	return db, nil
}
