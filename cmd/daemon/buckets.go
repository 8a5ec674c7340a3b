package daemon

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/rules"
)

// bucketView is one bucket in GET /buckets.
type bucketView struct {
	Key              string `json:"key"`
	Name             string `json:"name"`
	Type             string `json:"type"`
	ARN              string `json:"arn"`
	Account          string `json:"account"`
	Region           string `json:"region"`
	Zone             string `json:"zone,omitempty"`
	Algorithm        string `json:"algorithm"`
	KMSKeyID         string `json:"kmsKeyId"`
	BucketKeyEnabled bool   `json:"bucketKeyEnabled"`
	LifetimeKey      string `json:"lifetimeKey,omitempty"`
	Compliant        bool   `json:"compliant"`
	// Compliance is compliant, non-compliant or unknown (the inventory
	// could not read the bucket and nothing else is known).
	Compliance             string     `json:"compliance"`
	OpenFindings           []string   `json:"openFindings"`
	SeenBy                 string     `json:"seenBy"` // event or inventory
	BlockedEncryptionTypes []string   `json:"blockedEncryptionTypes"`
	KeyARN                 string     `json:"keyArn,omitempty"`
	KeyState               string     `json:"keyState,omitempty"`
	ReadError              string     `json:"readError,omitempty"`
	ScannedAt              *time.Time `json:"scannedAt,omitempty"`
	LastChange             time.Time  `json:"lastChange"`
	LastActor              string     `json:"lastActor"`
	LastEvent              string     `json:"lastEvent"`
	LastEventID            string     `json:"lastEventId"`
}

// bucketsHandler serves GET /buckets: what encwatch knows of each bucket,
// in key order, paginated with ?limit= (default 100, at most 1000) and
// ?after=<key of the last bucket of the previous page>.
func bucketsHandler(db *bolt.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				http.Error(w, "limit must be a positive number", http.StatusBadRequest)
				return
			}
			limit = min(n, 1000)
		}
		after := []byte(r.URL.Query().Get("after"))
		page := struct {
			Buckets []bucketView `json:"buckets"`
			Next    string       `json:"next,omitempty"`
		}{Buckets: []bucketView{}}
		err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(rules.BucketStateTable)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.First()
			if len(after) > 0 {
				k, v = c.Seek(after)
				if k != nil && string(k) == string(after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if len(page.Buckets) == limit {
					page.Next = page.Buckets[limit-1].Key
					break
				}
				var st rules.BucketState
				if err := json.Unmarshal(v, &st); err != nil {
					return err
				}
				page.Buckets = append(page.Buckets, viewOf(string(k), st))
			}
			return nil
		})
		if err != nil {
			http.Error(w, "reading bucket state: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(page)
	}
}

func viewOf(key string, st rules.BucketState) bucketView {
	v := bucketView{Key: key, Name: st.Bucket.Name, Type: st.Bucket.Type, ARN: st.Bucket.ARN,
		Account: st.Bucket.Account, Region: st.Bucket.Region, Zone: st.Bucket.Zone, Algorithm: st.Algorithm, KMSKeyID: st.KMSKeyID,
		BucketKeyEnabled: st.BucketKeyEnabled, LifetimeKey: st.LifetimeKey, Compliant: st.Compliance() == rules.Compliant,
		Compliance: st.Compliance(), OpenFindings: st.Open, SeenBy: st.SeenBy(), BlockedEncryptionTypes: st.BlockedEncryptionTypes,
		KeyARN: st.KeyARN, KeyState: st.KeyState, ReadError: st.ReadError,
		LastChange: st.LastChange, LastActor: st.LastActor, LastEvent: st.LastEvent, LastEventID: st.LastEventID}
	if v.OpenFindings == nil {
		v.OpenFindings = []string{}
	}
	if !st.ScannedAt.IsZero() {
		t := st.ScannedAt
		v.ScannedAt = &t
	}
	return v
}
