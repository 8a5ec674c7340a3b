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
	Fired     map[string]time.Time `json:",omitempty"`
	Compliant bool
	// Basis says where the configuration above was last learnt: "event"
	// (a Put or Delete) or "inventory" (a scan).
	Basis string `json:",omitempty"`
	// What the last scan read beyond the configuration: the key as KMS
	// describes it, and the read's digest (a scan that reads the same
	// again raises nothing).
	KeyARN     string    `json:",omitempty"`
	KeyManager string    `json:",omitempty"`
	KeyState   string    `json:",omitempty"`
	ScanDigest string    `json:",omitempty"`
	ScannedAt  time.Time `json:",omitzero"`
	// ReadError is the AWS error code of the last scan that could not
	// read the configuration ("" once a read succeeds).
	ReadError string `json:",omitempty"`
	// Missing counts the complete scans of the bucket's account and Region
	// that did not list it; at two it leaves the state.
	Missing int `json:",omitempty"`
	// Open are the rules whose findings stand for the current
	// configuration (raised by the Put, Delete or scan that set it).
	Open []string `json:",omitempty"`
	// LastCompliant is the last configuration the bucket was known to have
	// that met the policy (what remediation writes back); nil when none.
	LastCompliant *KnownConfig `json:",omitempty"`
	LastChange    time.Time
	LastActor     string
	LastEventID   string
	LastEvent     string
}

// KnownConfig is a bucket configuration encwatch knew, and where from.
type KnownConfig struct {
	Algorithm        string
	KMSKeyID         string `json:",omitempty"`
	BucketKeyEnabled bool
	// BlockedEncryptionTypes as last known (nil: never stated).
	BlockedEncryptionTypes []string `json:",omitempty"`
	Basis                  string   // event or inventory
	EventID                string
	At                     time.Time
}

// configRules are the rules about what a configuration is, as opposed to
// who set it or how: a configuration none of them fires on, within the
// policy's algorithms and keys, is compliant.
var configRules = []string{EncryptionDeleted, AlgorithmNotAllowed, DirectoryAlgorithmUnsupported, DirectoryKMSKeyAlias, KMSAWSManagedKey,
	KMSKeyNotAllowed, KMSKeyRegionMismatch, BucketKeyDisabled, EncryptionConfigUnreadable, SSECUnblocked, KMSKeyForeignAccount, KMSKeyUnusable}

// noteCompliant keeps the current configuration as the last compliant one
// when it meets the policy.
func (s *BucketState) noteCompliant() {
	if !s.Compliant || s.Algorithm == "" || slices.ContainsFunc(s.Open, func(r string) bool { return slices.Contains(configRules, r) }) {
		return
	}
	s.LastCompliant = &KnownConfig{Algorithm: s.Algorithm, KMSKeyID: s.KMSKeyID, BucketKeyEnabled: s.BucketKeyEnabled,
		BlockedEncryptionTypes: s.BlockedEncryptionTypes, Basis: s.Basis, EventID: s.LastEventID, At: s.LastChange}
}

// Compliance values of a bucket.
const (
	Compliant    = "compliant"
	NonCompliant = "non-compliant"
	Unknown      = "unknown"
)

// Compliance says whether the bucket's known configuration meets the
// policy: non-compliant when a finding stands for it or its algorithm or
// key is outside the policy, unknown when no configuration is known (a
// bucket the scan could not read).
func (s BucketState) Compliance() string {
	switch {
	case len(s.Open) > 0:
		return NonCompliant
	case s.Algorithm == "":
		return Unknown
	case !s.Compliant:
		return NonCompliant
	}
	return Compliant
}

// SeenBy says whether the bucket was last seen by an event or a scan.
func (s BucketState) SeenBy() string {
	if !s.ScannedAt.IsZero() && !s.ScannedAt.Before(s.LastChange) {
		return "inventory"
	}
	if s.LastEvent != "" && s.Basis != "inventory" {
		return "event"
	}
	return firstOr(s.Basis, "event")
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
	// DeleteBucket forgets a bucket (one the inventory no longer lists).
	DeleteBucket(key string) error
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

// DeleteBucket implements State.
func (m *Memory) DeleteBucket(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.buckets, key)
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
