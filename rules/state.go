package rules

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// BucketState is what encwatch knows of one bucket from the events it saw.
type BucketState struct {
	Bucket           ingest.Bucket
	Algorithm        string // current default algorithm; AES256 after a delete
	KMSKeyID         string // current key as given
	BucketKeyEnabled bool
	// LifetimeKey is the first customer managed key set on a directory
	// bucket, normalised to its key ID. Directory buckets keep it for life.
	LifetimeKey string
	// LifetimeKeyEventID is the event that set LifetimeKey.
	LifetimeKeyEventID string
	// BlockedEncryptionTypes is what the last Put named (nil: none named).
	BlockedEncryptionTypes []string `json:",omitempty"`
	// Fired is when each rule last raised a finding of a Put on the
	// bucket, for policy.repeats.
	Fired       map[string]time.Time `json:",omitempty"`
	Compliant   bool
	LastChange  time.Time
	LastActor   string
	LastEventID string
	LastEvent   string
}

// State keeps bucket state between events. Implementations are safe for
// concurrent use; the daemon's survives restarts, the Memory one does not.
type State interface {
	// Bucket returns the state of a bucket and whether any is known.
	Bucket(key string) (BucketState, bool, error)
	// PutBucket stores the state of a bucket.
	PutBucket(key string, s BucketState) error
	// EachBucket calls fn with every bucket's state, in key order.
	EachBucket(fn func(key string, s BucketState) error) error
	Groups
	Readers
}

// StateKey is the key a bucket's state is stored under: account, Region and
// name, since directory bucket names are unique per zone, not globally.
func StateKey(b ingest.Bucket) string {
	if b.Type == ingest.BucketDirectory {
		return b.Account + "/" + b.Region + "/" + b.Name
	}
	return b.Account + "//" + b.Name
}

// Memory is a State held in memory.
type Memory struct {
	mu      sync.Mutex
	buckets map[string]BucketState
	groups  map[string]Group
	reads   map[string]Reads
}

// NewMemory returns an empty in-memory State.
func NewMemory() *Memory { return &Memory{buckets: map[string]BucketState{}} }

// Bucket implements State.
func (m *Memory) Bucket(key string) (BucketState, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.buckets[key]
	return s, ok, nil
}

// PutBucket implements State.
func (m *Memory) PutBucket(key string, s BucketState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.buckets[key] = s
	return nil
}

// EachBucket implements State.
func (m *Memory) EachBucket(fn func(key string, s BucketState) error) error {
	all := m.Buckets()
	for _, k := range slices.Sorted(maps.Keys(all)) {
		if err := fn(k, all[k]); err != nil {
			return err
		}
	}
	return nil
}

// Buckets returns a copy of every bucket's state.
func (m *Memory) Buckets() map[string]BucketState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]BucketState, len(m.buckets))
	for k, v := range m.buckets {
		out[k] = v
	}
	return out
}
