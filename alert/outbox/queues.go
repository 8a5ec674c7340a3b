package outbox

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// QueueInfo describes one queue stored in the outbox.
type QueueInfo struct {
	Name        string
	Pending     int // alerts waiting
	DeadLetters int
	// Configured reports whether a sink of the running configuration owns
	// the queue (set by the caller; the database does not know).
	Configured bool
}

// ListQueues lists every queue the database holds, configured or not, by
// name. It needs no running outbox.
func ListQueues(db *bolt.DB) ([]QueueInfo, error) {
	byName := map[string]*QueueInfo{}
	get := func(name string) *QueueInfo {
		q := byName[name]
		if q == nil {
			q = &QueueInfo{Name: name}
			byName[name] = q
		}
		return q
	}
	err := db.View(func(tx *bolt.Tx) error {
		if root := tx.Bucket(QueueTable); root != nil {
			if err := root.ForEachBucket(func(k []byte) error {
				get(string(k)).Pending = count(root.Bucket(k))
				return nil
			}); err != nil {
				return err
			}
		}
		if root := tx.Bucket(DeadLetterTable); root != nil {
			return root.ForEachBucket(func(k []byte) error {
				get(string(k)).DeadLetters = count(root.Bucket(k))
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]QueueInfo, 0, len(byName))
	for _, q := range byName {
		out = append(out, *q)
	}
	slices.SortFunc(out, func(a, b QueueInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// count counts a bucket's keys with a cursor: Bucket.Stats walks every
// page and asserts on what it finds, so a damaged page would panic there.
func count(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// MoveQueue moves every alert waiting in queue from to the end of queue to
// (created when missing), oldest first, and removes the emptied queue from,
// with its dead letters moved along. The daemon must be stopped (the
// database lock sees to it). It returns how many alerts moved.
func MoveQueue(db *bolt.DB, from, to string) (int, error) {
	if from == to {
		return 0, fmt.Errorf("--from and --to are the same queue %q", from)
	}
	n := 0
	err := db.Update(func(tx *bolt.Tx) error {
		for _, rootName := range [][]byte{QueueTable, DeadLetterTable} {
			root, err := tx.CreateBucketIfNotExists(rootName)
			if err != nil {
				return err
			}
			src := root.Bucket([]byte(from))
			if src == nil {
				if string(rootName) == string(QueueTable) {
					return fmt.Errorf("no queue %q in the outbox", from)
				}
				continue
			}
			dst, err := root.CreateBucketIfNotExists([]byte(to))
			if err != nil {
				return err
			}
			c := src.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				seq, err := dst.NextSequence()
				if err != nil {
					return err
				}
				if err := dst.Put(key(seq), v); err != nil {
					return err
				}
				if string(rootName) == string(QueueTable) {
					n++
				}
			}
			if err := root.DeleteBucket([]byte(from)); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// DropQueue deletes a queue with every alert waiting in it and its dead
// letters. It returns how many waiting alerts were dropped.
func DropQueue(db *bolt.DB, queue string) (int, error) {
	n := 0
	err := db.Update(func(tx *bolt.Tx) error {
		found := false
		for _, rootName := range [][]byte{QueueTable, DeadLetterTable} {
			root := tx.Bucket(rootName)
			if root == nil || root.Bucket([]byte(queue)) == nil {
				continue
			}
			found = true
			if string(rootName) == string(QueueTable) {
				n = count(root.Bucket([]byte(queue)))
			}
			if err := root.DeleteBucket([]byte(queue)); err != nil {
				return err
			}
		}
		if !found {
			return fmt.Errorf("no queue %q in the outbox", queue)
		}
		return nil
	})
	return n, err
}
