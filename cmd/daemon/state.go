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
//	checkpoints  ingest         source position key → the source's checkpoint (JSON; for
//	                            repartition/TOPIC/PARTITION the next offset this state judged)
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

// CorruptStateError is a state file that cannot be used as it is: bbolt
// cannot open it, or its consistency check finds damage. The daemon
// refuses to start on it (exit 2) rather than panic inside bbolt or judge
// with half a state.
type CorruptStateError struct {
	Path string
	Err  error
}

func (e *CorruptStateError) Error() string {
	return fmt.Sprintf("state %s is damaged: %v\n"+
		"  encwatch state check --config FILE  shows what is wrong.\n"+
		"  To start again, stop encwatch and move the file aside:  mv %s %s.damaged\n"+
		"  A new state starts empty: LookupEvents resumes from sources.lookup.startFrom, files are read again, SQS and Kafka go on\n"+
		"  from their own positions; alerts still waiting in the outbox and dead letters, open windows, directory-bucket keys\n"+
		"  and quarantined batches of the old file are not carried over (alerts may be raised again, with the same ids).",
		e.Path, e.Err, e.Path, e.Path)
}

func (e *CorruptStateError) Unwrap() error { return e.Err }

// openState opens the bbolt database in the state folder and checks it
// before anything reads it. The file lock keeps a second daemon off the
// same state.
func openState(dir string) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state.dir: %w", err)
	}
	path := filepath.Join(dir, "encwatch.db")
	db, err := OpenChecked(path, 5*time.Second)
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("state %s is in use by another encwatch process", path)
	}
	return db, err
}

// OpenChecked opens a state file and runs bbolt's consistency check on it.
// bbolt panics on some damage (a bad freelist or page); such panics, and
// what the check finds, come back as a *CorruptStateError.
func OpenChecked(path string, timeout time.Duration) (db *bolt.DB, err error) {
	var file *os.File // kept so that a panic inside Open does not leave the file open and locked
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			} else if file != nil {
				file.Close()
			}
			db, err = nil, &CorruptStateError{Path: path, Err: fmt.Errorf("bbolt: %v", r)}
		}
	}()
	if err := precheck(path); err != nil {
		return nil, &CorruptStateError{Path: path, Err: err}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, mode)
		file = f
		return f, err
	}})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, err
	}
	if err != nil {
		if _, statErr := os.Stat(path); statErr == nil && !errors.Is(err, os.ErrPermission) {
			return nil, &CorruptStateError{Path: path, Err: err}
		}
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	if problems := Check(db); len(problems) > 0 {
		db.Close()
		return nil, &CorruptStateError{Path: path, Err: fmt.Errorf("%d problems, first: %w", len(problems), problems[0])}
	}
	return db, nil
}

// Check runs bbolt's consistency check over the whole file and returns
// what it finds (nil when the file is sound). A panic inside the check is
// one problem.
func Check(db *bolt.DB) (problems []error) {
	defer func() {
		if r := recover(); r != nil {
			problems = append(problems, fmt.Errorf("bbolt: %v", r))
		}
	}()
	err := db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e)
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	return problems
}
