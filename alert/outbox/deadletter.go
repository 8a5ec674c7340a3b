package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/encwatch/encwatch/ingest/backoff"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// DeadLetters lists the dead-lettered alerts of every sink (or of one).
// It needs no running outbox: it reads the database.
func DeadLetters(db *bolt.DB, sink string) ([]Entry, error) {
	var out []Entry
	err := db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(DeadLetterTable)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			if sink != "" && string(name) != sink {
				return nil
			}
			return root.Bucket(name).ForEach(func(k, v []byte) error {
				var e Entry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("dead letter %s/%x: %w", name, k, err)
				}
				e.Seq, e.Sink = binary.BigEndian.Uint64(k), string(name)
				out = append(out, e)
				return nil
			})
		})
	})
	return out, err
}

// Requeue moves dead-lettered alerts back to their sink's outbox queue, to
// be sent by the running (or next) daemon. seq 0 requeues every dead letter
// of the sink (every sink when sink is ""). It returns how many moved.
func Requeue(db *bolt.DB, sink string, seq uint64) (int, error) {
	n := 0
	err := db.Update(func(tx *bolt.Tx) error {
		root, out := tx.Bucket(DeadLetterTable), tx.Bucket(QueueTable)
		if root == nil || out == nil {
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			if sink != "" && string(name) != sink {
				return nil
			}
			dl, q := root.Bucket(name), out.Bucket(name)
			if q == nil {
				return fmt.Errorf("no outbox queue for sink %s", name)
			}
			var keys [][]byte
			err := dl.ForEach(func(k, v []byte) error {
				if seq != 0 && binary.BigEndian.Uint64(k) != seq {
					return nil
				}
				var e Entry
				if err := json.Unmarshal(v, &e); err != nil {
					return err
				}
				e.Reason, e.Attempts = "", 0
				raw, _ := json.Marshal(Entry{Alert: e.Alert, Enqueued: e.Enqueued})
				next, err := q.NextSequence()
				if err != nil {
					return err
				}
				keys = append(keys, append([]byte(nil), k...))
				n++
				return q.Put(key(next), raw)
			})
			if err != nil {
				return err
			}
			for _, k := range keys {
				if err := dl.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	})
	return n, err
}

// deleteSent deletes, in one transaction, alerts their sink accepted.
// While the state cannot be written (a full disk) it retries with backoff
// rather than send the alerts again and again; only a stop leaves them to
// be sent again after the restart.
func (ob *Outbox) deleteSent(ctx context.Context, name string, es []Entry, log zerolog.Logger) {
	wait := backoff.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for i := 0; ; i++ {
		err := ob.delete(name, es)
		if err == nil {
			return
		}
		if i == 0 {
			log.Error().Err(err).Msg("deleting a sent alert failed; retrying (if encwatch stops first, the alert is sent again)")
		}
		if !backoff.Sleep(ctx, wait.Next()) {
			return
		}
	}
}

func (ob *Outbox) deadLetter(ctx context.Context, e Entry, reason string, log zerolog.Logger) {
	e.Reason, e.Failed = reason, ob.o.Now().UTC()
	raw, err := json.Marshal(e)
	if err != nil {
		// The stored alert is not JSON (damaged on disk): keep its bytes,
		// as a string, rather than an empty dead letter.
		q, _ := json.Marshal(string(e.Alert))
		e.Alert = q
		raw, _ = json.Marshal(e)
	}
	err = ob.o.DB.Update(func(tx *bolt.Tx) error {
		dl, err := tx.Bucket(DeadLetterTable).CreateBucketIfNotExists([]byte(e.Sink))
		if err != nil {
			return err
		}
		seq, err := dl.NextSequence()
		if err != nil {
			return err
		}
		if err := dl.Put(key(seq), raw); err != nil {
			return err
		}
		return tx.Bucket(QueueTable).Bucket([]byte(e.Sink)).Delete(key(e.Seq))
	})
	if err != nil {
		log.Error().Err(err).Msg("moving an alert to the dead letters")
		backoff.Sleep(ctx, time.Second)
		return
	}
	ob.removed(e.Sink)
	ob.o.Metrics.deadLetters.WithLabelValues(e.Sink).Inc()
	log.Error().Str("reason", reason).Uint64("seq", e.Seq).Msg("alert rejected for good: moved to the dead letters (encwatch deadletter list)")
}

// DeadLetterCount returns how many alerts of a sink are dead letters.
func DeadLetterCount(db *bolt.DB, sink string) (int, error) {
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		if root := tx.Bucket(DeadLetterTable); root != nil {
			if b := root.Bucket([]byte(sink)); b != nil {
				n = b.Stats().KeyN
			}
		}
		return nil
	})
	return n, err
}
