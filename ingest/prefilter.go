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

// dataNeedles are what a data event must contain to matter to the
// data-event rules: the encryption headers of its request or response, or
// what S3 applied. They are searched only when those rules are on.
var dataNeedles = [][]byte{[]byte("x-amz-server-side-encryption"), []byte("SSEApplied")}

// maxNeedle is the longest needle, for the overlap kept between reads.
const maxNeedle = len("x-amz-server-side-encryption")

// index returns the first offset of any needle in b, or -1.
func (d *Decoder) index(b []byte) int {
	i := bytes.Index(b, needle)
	if !d.DataEvents {
		return i
	}
	for _, n := range dataNeedles {
		end := len(b)
		if i >= 0 {
			end = min(len(b), i+len(n))
		}
		if j := bytes.Index(b[:end], n); j >= 0 && (i < 0 || j < i) {
			i = j
		}
	}
	return i
}

// contains reports whether b holds any needle.
func (d *Decoder) contains(b []byte) bool { return d.index(b) >= 0 }
