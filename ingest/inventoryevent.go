package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// InventorySource names the source of inventory events in batches.
const InventorySource = "inventory"

// InventoryOrigin is where a scan of an account and Region read from.
func InventoryOrigin(account, region string) Position {
	return Position{Source: "inventory:" + account + "/" + region}
}

func inventoryEvent(b Bucket, at time.Time, origin Position) *Event {
	src := SourceS3
	if b.Type == BucketDirectory {
		src = SourceS3Express
	}
	return &Event{Name: GetBucketEncryption, Source: src, Time: at, TimeRaw: at.UTC().Format(time.RFC3339), Region: b.Region,
		Account: b.Account, Bucket: b, Inventory: &InventoryRead{}, Origin: origin}
}

// NewInventoryRead is the event of a scan's read of a bucket's
// configuration. Its ID is derived from the bucket ARN and a digest of what
// was read (configuration and key), so every read of an unchanged bucket
// has the same ID, and so its findings the same alert IDs.
func NewInventoryRead(b Bucket, enc Encryption, key KeyInfo, at time.Time, origin Position) *Event {
	ev := inventoryEvent(b, at, origin)
	ev.Encryption, ev.Inventory.Key = enc, key
	parts := []string{"config", b.ARN}
	for _, r := range enc.Rules {
		parts = append(parts, r.Algorithm, r.KMSKeyID, fmt.Sprint(r.BucketKeySet, r.BucketKeyEnabled),
			fmt.Sprint(r.BlockedEncryptionTypes != nil), strings.Join(r.BlockedEncryptionTypes, ","))
	}
	ev.Digest = digest(append(parts, key.ARN, key.Manager, key.State, key.Error)...)
	ev.ID = "inventory-" + ev.Digest[:32]
	return ev
}

// NewInventoryError is the event of a bucket whose configuration a scan
// could not read (code: the AWS error code).
func NewInventoryError(b Bucket, code, msg string, at time.Time, origin Position) *Event {
	ev := inventoryEvent(b, at, origin)
	ev.Inventory.ErrorCode, ev.Inventory.ErrorMessage = code, msg
	ev.Digest = digest("error", b.ARN, code)
	ev.ID = "inventory-" + ev.Digest[:32]
	return ev
}

// NewScanComplete is the marker a scan of an account and Region emits once
// the listings of the given bucket types went through to the end.
func NewScanComplete(account, region string, listed []string, started, at time.Time) *Event {
	ev := inventoryEvent(Bucket{Account: account, Region: region}, at, InventoryOrigin(account, region))
	ev.Source = SourceS3
	ev.Inventory.Complete, ev.Inventory.Listed, ev.Inventory.Started = true, listed, started
	ev.Digest = digest("complete", account, region, started.UTC().Format(time.RFC3339Nano))
	ev.ID = "inventory-complete-" + ev.Digest[:24]
	return ev
}

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
