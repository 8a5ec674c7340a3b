// Package repartition places each account's events on one encwatch task
// when several tasks share one input (an SQS queue): the tasks that read
// the input publish the events they decoded to a Kafka topic keyed by the
// bucket's account, and every task judges what the consumer group assigns
// it, so an account's stream reaches exactly one task, in order, and the
// stateful rules (directory-kms-key-changed, kms-key-unusable, the
// read-burst and data-event windows) see all of it.
//
// A task that is given a partition it did not judge up to the group's
// commit (another task did, and died or gave it up) first reads the
// partition again from where its own state stopped (or from the oldest
// retained message) to the commit, with Batch.Replay set: the bucket state
// is rebuilt, nothing is alerted twice. KMS lifecycle events go to every
// partition (a key may serve buckets of other accounts); each owner keeps
// only the findings about its own accounts' buckets (Batch.Owns).
package repartition

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/encwatch/encwatch/ingest"
)

// Version is the envelope's format version.
const Version = 1

// envelope is one event on the topic.
type envelope struct {
	V     int           `json:"v"`
	Event *ingest.Event `json:"event"`
}

// Encode returns an event's message value.
func Encode(ev *ingest.Event) ([]byte, error) {
	return json.Marshal(envelope{V: Version, Event: ev})
}

// Errors of Decode.
var (
	ErrTooLarge = errors.New("repartitioned event larger than limits.maxRecordBytes")
	ErrVersion  = errors.New("not an encwatch repartitioned event of a known version")
	ErrKind     = errors.New("repartitioned event is not one encwatch judges")
)

// Decode reads a message value written by Encode. Whoever can write to the
// topic can write anything: the value is bounded, must be an envelope of
// this version, and must hold an event encwatch judges, with no more
// encryption rules than the limits allow.
func Decode(b []byte, lim ingest.Limits) (*ingest.Event, error) {
	maxBytes := lim.MaxRecordBytes
	if maxBytes <= 0 {
		maxBytes = ingest.DefaultMaxRecordBytes
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, len(b))
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("repartitioned event: %w", err)
	}
	if env.V != Version || env.Event == nil {
		return nil, ErrVersion
	}
	ev := env.Event
	if !ev.IsEncryptionEvent() && !ev.IsKMSEvent() && !ev.IsDataEvent() && ev.Inventory == nil {
		return nil, fmt.Errorf("%w: %.100q from %.100q", ErrKind, ev.Name, ev.Source)
	}
	maxRules := lim.MaxRules
	if maxRules <= 0 {
		maxRules = ingest.DefaultMaxRules
	}
	if n := len(ev.Encryption.Rules); n > maxRules {
		ev.Encryption.Dropped += n - maxRules
		ev.Encryption.Rules = ev.Encryption.Rules[:maxRules]
	}
	return ev, nil
}
