package rules

import (
	"encoding/json"
	"fmt"
	"time"
)

// Reads is one caller's recent GetBucketEncryption calls: the distinct
// buckets read within the read-burst window and whether a burst is under
// way. It is stored with the bucket state, so a restart does not forget
// who was reading. A burst ends when the caller's count falls below the
// threshold again; one alert is raised per burst.
type Reads struct {
	Seen    map[string]time.Time `json:"seen"`
	Newest  time.Time            `json:"newest"`
	InBurst bool                 `json:"inBurst,omitempty"`
}

// readsCap bounds the buckets kept per caller, so a caller reading
// thousands of buckets costs a bounded record.
func readsCap(threshold int) int { return 4*max(threshold, 0) + 64 }

// observe records a read of bucket at t. It returns true, with the number
// of distinct buckets in the window, when this read starts a burst.
func (r *Reads) observe(bucket string, t time.Time, window time.Duration, threshold int) (bool, int) {
	if r.Seen == nil {
		r.Seen = map[string]time.Time{}
	}
	if t.After(r.Newest) {
		r.Newest = t
	}
	if t.IsZero() {
		t = r.Newest
	}
	if prev, ok := r.Seen[bucket]; !ok || t.After(prev) {
		r.Seen[bucket] = t
	}
	cutoff := r.Newest.Add(-window)
	for k, v := range r.Seen {
		if v.Before(cutoff) {
			delete(r.Seen, k)
		}
	}
	for limit := readsCap(threshold); len(r.Seen) > limit; {
		oldest, ot := "", time.Time{}
		for k, v := range r.Seen {
			if oldest == "" || v.Before(ot) || (v.Equal(ot) && k < oldest) {
				oldest, ot = k, v
			}
		}
		delete(r.Seen, oldest)
	}
	n := len(r.Seen)
	if n < threshold {
		r.InBurst = false
		return false, n
	}
	if r.InBurst {
		return false, n
	}
	r.InBurst = true
	return true, n
}

// idle reports whether the caller read nothing within window before now.
func (r *Reads) idle(now time.Time, window time.Duration) bool {
	return r.Newest.Before(now.Add(-window))
}

// Readers keeps the callers' read windows.
type Readers interface {
	// Reads returns a caller's reads and whether any are stored.
	Reads(caller string) (Reads, bool, error)
	// PutReads stores a caller's reads.
	PutReads(caller string, r Reads) error
	// DropIdleReads forgets the callers that read nothing within window
	// before now.
	DropIdleReads(now time.Time, window time.Duration) error
}

// ReadsTable is the bbolt bucket that holds the callers' read windows.
var ReadsTable = []byte("reads")

// Reads implements Readers.
func (s TxState) Reads(caller string) (Reads, bool, error) {
	b := s.Tx.Bucket(ReadsTable)
	if b == nil {
		return Reads{}, false, nil
	}
	raw := b.Get([]byte(caller))
	if raw == nil {
		return Reads{}, false, nil
	}
	var r Reads
	if err := json.Unmarshal(raw, &r); err != nil {
		return Reads{}, false, fmt.Errorf("reads of %q: %w", caller, err)
	}
	return r, true, nil
}

// PutReads implements Readers.
func (s TxState) PutReads(caller string, r Reads) error {
	b, err := s.Tx.CreateBucketIfNotExists(ReadsTable)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(caller), raw)
}

// DropIdleReads implements Readers.
func (s TxState) DropIdleReads(now time.Time, window time.Duration) error {
	b := s.Tx.Bucket(ReadsTable)
	if b == nil {
		return nil
	}
	var idle [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var r Reads
		if json.Unmarshal(v, &r) != nil || r.idle(now, window) {
			idle = append(idle, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range idle {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Reads implements Readers.
func (m *Memory) Reads(caller string) (Reads, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.reads[caller]
	return r, ok, nil
}

// PutReads implements Readers.
func (m *Memory) PutReads(caller string, r Reads) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reads == nil {
		m.reads = map[string]Reads{}
	}
	m.reads[caller] = r
	return nil
}

// DropIdleReads implements Readers.
func (m *Memory) DropIdleReads(now time.Time, window time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, r := range m.reads {
		if r.idle(now, window) {
			delete(m.reads, k)
		}
	}
	return nil
}
