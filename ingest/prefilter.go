package ingest

import "bytes"

// needle is the byte string every encryption event contains in its
// eventName (PutBucketEncryption, GetBucketEncryption,
// DeleteBucketEncryption). It also matches inside a LookupEvents
// CloudTrailEvent string, where quotes are escaped. A record without it
// cannot be an encryption event, so it is skipped without being decoded.
// Records that contain it elsewhere (a policy document, a user agent) are
// decoded and then dropped by Event.IsEncryptionEvent.
var needle = []byte("BucketEncryption")

// recordMarker starts every record of a CloudTrail log file as CloudTrail
// writes it (compact JSON, eventVersion first).
var recordMarker = []byte(`{"eventVersion":`)

// compactPrefix opens a CloudTrail log file as CloudTrail writes it.
var compactPrefix = []byte(`{"Records":[`)

// MayHoldEncryptionEvent reports whether b can hold an encryption event.
// It is the prefilter, exposed for tests and benchmarks.
func MayHoldEncryptionEvent(b []byte) bool { return bytes.Contains(b, needle) }
