package ingest

import (
	bolt "go.etcd.io/bbolt"
)

// CheckpointTable is the bbolt bucket that holds source checkpoints.
var CheckpointTable = []byte("checkpoints")

// BoltCheckpoints reads checkpoints from a bbolt database.
type BoltCheckpoints struct{ DB *bolt.DB }

// Checkpoint implements Checkpoints.
func (c BoltCheckpoints) Checkpoint(key string) ([]byte, error) {
	var out []byte
	err := c.DB.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(CheckpointTable); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				out = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return out, err
}

// PutCheckpoints stores a batch's checkpoints inside the caller's
// transaction; a nil value deletes its key.
func PutCheckpoints(tx *bolt.Tx, cps map[string][]byte) error {
	if len(cps) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(CheckpointTable)
	if err != nil {
		return err
	}
	for k, v := range cps {
		if v == nil {
			err = b.Delete([]byte(k))
		} else {
			err = b.Put([]byte(k), v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
