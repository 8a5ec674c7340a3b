package ingest

import "bytes"

// needle is the byte string every encryption event contains in its
// eventName (PutBucketEncryption, GetBucketEncryption,
// DeleteBucketEncryption), and UpdateObjectEncryption too, so that one
// pass finds both. It also matches inside a LookupEvents CloudTrailEvent
// string, where quotes are escaped. A record without it (or a KMS or data
// needle) cannot matter, so it is skipped without being decoded. Records
// that contain it elsewhere (ServerSideEncryptionConfiguration in a
// replication rule, a policy document) are decoded and then dropped.
var needle = []byte("Encryption")

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

// kmsNeedle finds the KMS key lifecycle events kms-key-unusable reads
// (DisableKey, EnableKey, DeleteKey, ScheduleKeyDeletion,
// CancelKeyDeletion) in one more pass: every one holds "Key". A match
// counts only as the end of one of those names inside a JSON string (a
// quote or a backslash follows), so accessKeyId, BucketKeyEnabled,
// GenerateDataKey or DisableKeyRotation cost a comparison and no decode.
// It depends neither on the order of a record's keys, nor on its spacing,
// nor on the escaping of a LookupEvents string.
var kmsNeedle = []byte("Key")

var kmsNames = [][]byte{[]byte("Disable"), []byte("Enable"), []byte("Delete"), []byte("Schedule"), []byte("Cancel")}

// kmsIndex returns the offset in b[:end] of the first KMS lifecycle event
// name, or -1.
func kmsIndex(b []byte, end int) int {
	for from := 0; from < end; {
		j := bytes.Index(b[from:end], kmsNeedle)
		if j < 0 {
			return -1
		}
		at := from + j
		if start := kmsName(b, at); start >= 0 {
			return start
		}
		from = at + len(kmsNeedle)
	}
	return -1
}

// kmsName checks that the "Key" at b[at:] ends a lifecycle event name and
// returns where the name starts, or -1.
func kmsName(b []byte, at int) int {
	after := at + len(kmsNeedle)
	deletion := bytes.HasPrefix(b[after:], []byte("Deletion"))
	if deletion {
		after += len("Deletion")
	}
	if after >= len(b) || (b[after] != '"' && b[after] != '\\') {
		return -1
	}
	for _, n := range kmsNames {
		if start := at - len(n); start > 0 && bytes.Equal(b[start:at], n) && (b[start-1] == '"' || b[start-1] == '\\') {
			isDeletion := n[0] == 'S' || n[0] == 'C'
			if deletion == isDeletion {
				return start
			}
		}
	}
	return -1
}

// index returns the first offset of any needle in b, or -1.
func (d *Decoder) index(b []byte) int {
	i := bytes.Index(b, needle)
	end := len(b)
	if i >= 0 {
		end = i
	}
	if k := kmsIndex(b, end); k >= 0 {
		i = k
	}
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

// needleKinds are the searches of the compact path: the main needle (and,
// with DataEvents, "SSEApplied" in the same pass: both are found from
// their "E"), the KMS lifecycle names, and the header data needle (only
// with DataEvents). Each pass costs about one call per occurrence of its
// first byte, and in CloudTrail's random session tokens every capital
// letter is frequent: a pass of its own for "SSEApplied", led by "S",
// was an eighth of replay's CPU on a trail without data events.
const (
	kindMain = iota
	kindKMS
	kindData
	needleKinds
)

// found is where one kind of needle was last searched for, in absolute
// offsets of the stream: searched [from, to) and found the first match at
// at (-1: none there).
type found struct{ from, to, at int64 }

// needles remembers, for each kind, the first match at or after the last
// search, so that the compact path scans each byte once per kind. Without
// it, a rare needle (a KMS name) was searched for again to the end of the
// buffer after every match of a frequent one (a data needle in one record
// of three): quadratic in the buffer, 10x replay time.
type needles struct {
	f     [needleKinds]found
	valid bool
}

// indexAt is index for data, which starts at the absolute offset abs of
// the stream, with what earlier searches found reused. Earlier matches
// before abs are dropped; a search that found nothing is continued from
// where it stopped.
func (d *Decoder) indexAt(abs int64, data []byte) int {
	if !d.memo.valid {
		d.memo = needles{valid: true}
		for k := range d.memo.f {
			d.memo.f[k] = found{from: -1, to: -1, at: -1}
		}
	}
	kinds := needleKinds
	if !d.DataEvents {
		kinds = kindData
	}
	end := abs + int64(len(data))
	best := int64(-1)
	for k := range kinds {
		f := &d.memo.f[k]
		switch {
		case f.from >= 0 && f.from <= abs && f.at >= abs:
			// The first match at or after abs is still that one.
		case f.from >= 0 && f.from <= abs && f.at < 0 && f.to >= abs:
			// Nothing in [from, to): go on from to, with an overlap for a
			// match that straddled it.
			from := max(abs, f.to-int64(maxNeedle)-int64(len("Deletion")))
			f.at = searchKind(d, k, data, abs, from, end)
			f.from, f.to = abs, end
		default:
			f.at = searchKind(d, k, data, abs, abs, end)
			f.from, f.to = abs, end
		}
		if f.at >= 0 && f.at < end && (best < 0 || f.at < best) {
			best = f.at
		}
	}
	if best < 0 {
		return -1
	}
	return int(best - abs)
}

// searchKind finds the first match of kind k in data[from-abs:] and
// returns its absolute offset, or -1.
func searchKind(d *Decoder, k int, data []byte, abs, from, end int64) int64 {
	lo := int(from - abs)
	if lo >= len(data) {
		return -1
	}
	var j int
	switch k {
	case kindMain:
		j = indexMain(data, lo, d.DataEvents)
	case kindKMS:
		// kmsName looks back before the match: search the whole data, but
		// from lo.
		j = -1
		for from := lo; from < len(data); {
			i := bytes.Index(data[from:], kmsNeedle)
			if i < 0 {
				break
			}
			at := from + i
			if start := kmsName(data, at); start >= lo {
				j = start
				break
			}
			from = at + len(kmsNeedle)
		}
	default:
		j = bytes.Index(data[lo:], dataNeedles[0])
		if j >= 0 {
			j += lo
		}
	}
	if j < 0 {
		return -1
	}
	return abs + int64(j)
}

// indexMain returns the offset of the first "Encryption" in data[lo:], or
// of the first "SSEApplied" when withApplied, whichever comes first; -1
// when there is neither. One IndexByte pass serves both needles.
func indexMain(data []byte, lo int, withApplied bool) int {
	rest, applied := needle[1:], dataNeedles[1][3:] // "ncryption", "Applied"
	for i := lo; i < len(data); {
		j := bytes.IndexByte(data[i:], 'E')
		if j < 0 {
			return -1
		}
		at := i + j
		tail := data[at+1:]
		if bytes.HasPrefix(tail, rest) {
			return at
		}
		if withApplied && at-2 >= lo && data[at-2] == 'S' && data[at-1] == 'S' && bytes.HasPrefix(tail, applied) {
			return at - 2
		}
		i = at + 1
	}
	return -1
}
