package rules

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BucketStateTable is the bbolt bucket that holds bucket state.
var BucketStateTable = []byte("buckets")

// TxState is a State inside one bbolt transaction, so that what the rules
// learn from a batch of events is stored together with the batch's
// findings and checkpoints, or not at all. A read-only transaction serves
// Bucket only.
type TxState struct{ Tx *bolt.Tx }

// Bucket implements State.
func (s TxState) Bucket(key string) (BucketState, bool, error) {
	b := s.Tx.Bucket(BucketStateTable)
	if b == nil {
		return BucketState{}, false, nil
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return BucketState{}, false, nil
	}
	var st BucketState
	if err := json.Unmarshal(raw, &st); err != nil {
		return BucketState{}, false, fmt.Errorf("bucket state %q: %w", key, err)
	}
	return st, true, nil
}

// PutBucket implements State.
func (s TxState) PutBucket(key string, st BucketState) error {
	b, err := s.Tx.CreateBucketIfNotExists(BucketStateTable)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// DeleteBucket implements State.
func (s TxState) DeleteBucket(key string) error {
	if b := s.Tx.Bucket(BucketStateTable); b != nil {
		return b.Delete([]byte(key))
	}
	return nil
}

// EachBucket implements State.
func (s TxState) EachBucket(fn func(key string, st BucketState) error) error {
	return ForEachBucket(s.Tx, fn)
}

// ForEachBucket calls fn with every stored bucket state, in key order.
func ForEachBucket(tx *bolt.Tx, fn func(key string, st BucketState) error) error {
	b := tx.Bucket(BucketStateTable)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var st BucketState
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("bucket state %q: %w", k, err)
		}
		return fn(string(k), st)
	})
}
