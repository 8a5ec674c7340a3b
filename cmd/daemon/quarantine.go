package daemon

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/ingest"
)

// Poison input must never put the daemon into a crash loop. Three bbolt
// buckets see to it:
//
//   - inflight: before a batch with events is judged, its event digests are
//     stored under a mark; the transaction that stores the batch's findings
//     deletes the mark. A mark found at start is a batch the process died
//     judging (a fatal error, a stack overflow, the OOM killer, or a kill).
//   - suspects: at start, each event of such a batch counts one crash. An
//     event that was in flight at maxCrashes crashes is set aside, not
//     judged, the next time a source hands it on. A single kill -9 during a
//     batch therefore sets nothing aside; the same input crashing twice
//     does, however the source batches it.
//   - quarantine: batches (or the suspect events of one) set aside, with
//     their origin and the reason; the source moves past them. `encwatch
//     quarantine list|retry|drop` shows them, has the daemon judge them
//     again at its next start, or forgets them.
var (
	inflightTable   = []byte("inflight")
	suspectsTable   = []byte("suspects")
	quarantineTable = []byte("quarantine")
)

// maxCrashes is how many crashes an event may be in flight at before it
// is set aside.
const maxCrashes = 2

// inflightMark is what the inflight bucket holds for a batch being judged.
type inflightMark struct {
	Source  string    `json:"source"`
	Origin  string    `json:"origin"`
	Started time.Time `json:"started"`
	Digests []string  `json:"digests"`
}

// suspect is an event that was in flight when the process died.
type suspect struct {
	Crashes int       `json:"crashes"`
	Source  string    `json:"source"`
	Origin  string    `json:"origin"`
	EventID string    `json:"eventId,omitempty"`
	Since   time.Time `json:"since"`
}

// Quarantined is a batch, or part of one, set aside instead of judged.
type Quarantined struct {
	ID     uint64          `json:"-"`
	Source string          `json:"source"`
	Origin string          `json:"origin"` // where the first event was read
	Reason string          `json:"reason"` // crashed, store_failed
	Error  string          `json:"error"`
	At     time.Time       `json:"at"`
	Retry  bool            `json:"retry,omitempty"` // judge again at the next start
	Events []*ingest.Event `json:"events"`
}

// Reasons a batch is set aside.
const (
	reasonCrashed     = "crashed"
	reasonStoreFailed = "store_failed"
)

func batchOrigin(evs []*ingest.Event) string {
	if len(evs) == 0 {
		return ""
	}
	o := evs[0].Origin.String()
	if len(evs) > 1 {
		o += fmt.Sprintf(" (and %d more events)", len(evs)-1)
	}
	return o
}

func seqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// markInflight stores the mark of a batch about to be judged and returns
// its key.
func markInflight(db *bolt.DB, b ingest.Batch, now time.Time) ([]byte, error) {
	m := inflightMark{Source: b.Source, Origin: batchOrigin(b.Events), Started: now.UTC()}
	for _, ev := range b.Events {
		m.Digests = append(m.Digests, ev.Digest)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var k []byte
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(inflightTable)
		if err != nil {
			return err
		}
		n, err := bk.NextSequence()
		if err != nil {
			return err
		}
		k = seqKey(n)
		return bk.Put(k, raw)
	})
	return k, err
}

// recoverInflight turns the marks of batches the last process died judging
// into suspects, and returns those marks for the log.
func recoverInflight(db *bolt.DB, now time.Time) ([]inflightMark, error) {
	var marks []inflightMark
	err := db.Update(func(tx *bolt.Tx) error {
		in := tx.Bucket(inflightTable)
		if in == nil {
			return nil
		}
		sus, err := tx.CreateBucketIfNotExists(suspectsTable)
		if err != nil {
			return err
		}
		if err := in.ForEach(func(_, v []byte) error {
			var m inflightMark
			if json.Unmarshal(v, &m) != nil {
				return nil
			}
			marks = append(marks, m)
			for _, d := range m.Digests {
				var s suspect
				if raw := sus.Get([]byte(d)); raw != nil {
					_ = json.Unmarshal(raw, &s)
				} else {
					s = suspect{Source: m.Source, Origin: m.Origin, Since: now.UTC()}
				}
				s.Crashes++
				raw, err := json.Marshal(s)
				if err != nil {
					return err
				}
				if err := sus.Put([]byte(d), raw); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.DeleteBucket(inflightTable)
	})
	return marks, err
}

// crashCounts returns, for the events of a batch that are suspects, how
// many crashes each was in flight at (nil when none is a suspect).
func crashCounts(tx *bolt.Tx, evs []*ingest.Event) map[string]int {
	sus := tx.Bucket(suspectsTable)
	if sus == nil {
		return nil
	}
	var out map[string]int
	for _, ev := range evs {
		raw := sus.Get([]byte(ev.Digest))
		if raw == nil {
			continue
		}
		var s suspect
		if json.Unmarshal(raw, &s) == nil {
			if out == nil {
				out = map[string]int{}
			}
			out[ev.Digest] = s.Crashes
		}
	}
	return out
}

// clearSuspects forgets the events of a batch that was stored.
func clearSuspects(tx *bolt.Tx, evs []*ingest.Event) error {
	sus := tx.Bucket(suspectsTable)
	if sus == nil {
		return nil
	}
	for _, ev := range evs {
		if err := sus.Delete([]byte(ev.Digest)); err != nil {
			return err
		}
	}
	return nil
}

// putQuarantine sets events aside inside tx and returns the entry's ID.
func putQuarantine(tx *bolt.Tx, q Quarantined) (uint64, error) {
	bk, err := tx.CreateBucketIfNotExists(quarantineTable)
	if err != nil {
		return 0, err
	}
	id, err := bk.NextSequence()
	if err != nil {
		return 0, err
	}
	raw, err := json.Marshal(q)
	if err != nil {
		return 0, err
	}
	return id, bk.Put(seqKey(id), raw)
}

// ListQuarantine returns every batch set aside, oldest first.
func ListQuarantine(db *bolt.DB) ([]Quarantined, error) {
	var out []Quarantined
	err := db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(quarantineTable)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var q Quarantined
			if err := json.Unmarshal(v, &q); err != nil {
				return fmt.Errorf("quarantine entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			q.ID = binary.BigEndian.Uint64(k)
			out = append(out, q)
			return nil
		})
	})
	return out, err
}

// MarkQuarantineRetry asks the next daemon start to judge the entry again
// (id 0: every entry) and forgets its events' crash counts, so they are
// not set aside again before they are tried. It returns how many entries
// were marked.
func MarkQuarantineRetry(db *bolt.DB, id uint64) (int, error) {
	return updateQuarantine(db, id, func(bk *bolt.Bucket, k []byte, q *Quarantined) error {
		q.Retry = true
		raw, err := json.Marshal(q)
		if err != nil {
			return err
		}
		if err := bk.Put(k, raw); err != nil {
			return err
		}
		return clearSuspects(bk.Tx(), q.Events)
	})
}

// DropQuarantine forgets an entry (id 0: every entry) and returns how many
// were dropped.
func DropQuarantine(db *bolt.DB, id uint64) (int, error) {
	return updateQuarantine(db, id, func(bk *bolt.Bucket, k []byte, q *Quarantined) error {
		if err := bk.Delete(k); err != nil {
			return err
		}
		return clearSuspects(bk.Tx(), q.Events)
	})
}

func updateQuarantine(db *bolt.DB, id uint64, fn func(bk *bolt.Bucket, k []byte, q *Quarantined) error) (int, error) {
	n := 0
	err := db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(quarantineTable)
		if bk == nil {
			if id != 0 {
				return fmt.Errorf("no quarantine entry %d", id)
			}
			return nil
		}
		var keys [][]byte
		if err := bk.ForEach(func(k, _ []byte) error {
			if id == 0 || binary.BigEndian.Uint64(k) == id {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		if id != 0 && len(keys) == 0 {
			return fmt.Errorf("no quarantine entry %d", id)
		}
		for _, k := range keys {
			var q Quarantined
			if err := json.Unmarshal(bk.Get(k), &q); err != nil {
				return fmt.Errorf("quarantine entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if err := fn(bk, k, &q); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// quarantineSource names the batches the pipeline judges again on request.
const quarantineSource = "quarantine"

// retries returns the entries marked for another try.
func retries(db *bolt.DB) ([]Quarantined, error) {
	all, err := ListQuarantine(db)
	if err != nil {
		return nil, err
	}
	var out []Quarantined
	for _, q := range all {
		if q.Retry {
			out = append(out, q)
		}
	}
	return out, nil
}

func idString(id uint64) string { return strconv.FormatUint(id, 10) }

// recover runs before the sources start: it counts the batches the last
// process died judging against their events, says which, and judges again
// the quarantined batches an operator asked to retry.
func (p *pipeline) recover(ctx context.Context) error {
	marks, err := recoverInflight(p.db, p.now())
	if err != nil {
		return fmt.Errorf("state: reading the batches in flight at the last stop: %w", err)
	}
	for _, m := range marks {
		p.log.Warn().Str("source", m.Source).Str("origin", m.Origin).Int("events", len(m.Digests)).Time("started", m.Started).
			Msg("the last encwatch process stopped while judging this batch; its events are judged again, " +
				"and set aside in the quarantine if they are in flight at another crash")
	}
	if n, err := countQuarantine(p.db); err == nil && n > 0 {
		p.log.Warn().Int("entries", n).Msg("batches wait in the quarantine: encwatch quarantine list")
	}
	return p.retryQuarantined(ctx)
}

func countQuarantine(db *bolt.DB) (int, error) {
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(quarantineTable); bk != nil {
			c := bk.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
		}
		return nil
	})
	return n, err
}
