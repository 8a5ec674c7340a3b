package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"unsafe"
)

// decodeDataFast reads a data event (PutObject, CopyObject, ...) with a
// scanner for the few fields encwatch reads, instead of encoding/json: with
// the data-event rules on, one record in three of a data-event trail is
// such an event, and encoding/json made replay 5x slower.
//
// It declines (false) whatever it is not sure to read exactly as
// decodeRecord does, which then reads the record: a string it reads that
// holds an escape, a key that holds an escape or a non-ASCII byte (json
// matches field names by Unicode case folding), a key that matches a field
// only case-insensitively or twice, a value of an unexpected type, an
// encryption configuration, UpdateObjectEncryption's ObjectEncryption,
// invalid UTF-8 anywhere, nesting past 64, any syntax error, and any record
// that is not a data event. What it accepts, encoding/json accepts, and the
// event is the same (FuzzDataFast checks both).
//
// A data event that matters to no rule (Event.DataMatters) gives nil and
// true, without a copy or an allocation. An event's strings are
// substrings of one copy of the record, so it costs a few allocations
// whatever its size.
func decodeDataFast(raw []byte, validUTF8 bool) (*Event, bool) {
	raw = bytes.TrimSpace(raw)
	if !validUTF8 || len(raw) == 0 || raw[0] != '{' || hasControl(raw) {
		return nil, false
	}
	// First over a view of the bytes, which no string outlives: most data
	// events matter to no rule and cost no copy and no allocation.
	_, n, matters, ok := scanData(raw, unsafe.String(unsafe.SliceData(raw), len(raw)), false)
	if !ok || n != len(raw) || !matters {
		return nil, ok && n == len(raw)
	}
	ev, _, _, ok := scanData(raw, string(raw), true)
	return ev, ok
}

// scanDataPrefix reads the data event that starts at b[0], without
// building it: it returns the record's length and whether it matters to a
// rule. b may go on past the record (the decoder's buffer).
func scanDataPrefix(b []byte) (n int, matters, ok bool) {
	if len(b) == 0 || b[0] != '{' {
		return 0, false, false
	}
	_, n, matters, ok = scanData(b, unsafe.String(unsafe.SliceData(b), len(b)), false)
	return n, matters, ok
}

// scanData scans the record at the start of raw, whose bytes s holds as a
// string, and reports its length and whether it is a data event that
// matters to a rule; the event is built only when build is set (s then
// outlives the call, and raw holds the record alone).
func scanData(raw []byte, s string, build bool) (ev *Event, n int, matters, ok bool) {
	f := fastScan{b: raw, s: s}
	var r rawRecord
	var id rawIdentity
	var issuerARN text
	var hasID, hasSC, hasIssuer bool
	var p params
	var obj ObjectRequest
	var sse, sseC string
	var resources []rawResource
	ok = f.object(0, recordFields, false, func(key string) bool {
		switch key {
		case "eventVersion":
			return f.text(&r.EventVersion)
		case "eventTime":
			return f.text(&r.EventTime)
		case "eventSource":
			return f.text(&r.EventSource)
		case "eventName":
			return f.text(&r.EventName)
		case "awsRegion":
			return f.text(&r.AWSRegion)
		case "sourceIPAddress":
			return f.text(&r.SourceIPAddress)
		case "userAgent":
			return f.text(&r.UserAgent)
		case "errorCode":
			return f.text(&r.ErrorCode)
		case "errorMessage":
			return f.text(&r.ErrorMessage)
		case "eventID":
			return f.text(&r.EventID)
		case "recipientAccountId":
			return f.text(&r.RecipientAccountID)
		case "userIdentity":
			if f.null() {
				return true
			}
			hasID = true
			return f.object(1, identityFields, false, func(key string) bool {
				switch key {
				case "type":
					return f.text(&id.Type)
				case "principalId":
					return f.text(&id.PrincipalID)
				case "arn":
					return f.text(&id.ARN)
				case "accountId":
					return f.text(&id.AccountID)
				case "accessKeyId":
					return f.text(&id.AccessKeyID)
				case "userName":
					return f.text(&id.UserName)
				case "invokedBy":
					return f.text(&id.InvokedBy)
				}
				// sessionContext
				if f.null() {
					return true
				}
				hasSC = true
				return f.object(2, sessionFields, false, func(string) bool {
					if f.null() {
						return true
					}
					hasIssuer = true
					return f.object(3, issuerFields, false, func(string) bool { return f.text(&issuerARN) })
				})
			})
		case "requestParameters":
			if f.peek() != '{' {
				return f.skip(1) // not an object: no parameters
			}
			return f.object(1, paramFields, true, func(key string) bool {
				switch key {
				case "bucketname":
					return f.scalar(&p.bucketName)
				case "host":
					return f.scalar(&p.host)
				case "key":
					return f.scalar(&obj.Key)
				case "x-amz-server-side-encryption":
					return f.scalar(&sse)
				case "x-amz-server-side-encryption-customer-algorithm":
					return f.scalar(&sseC)
				case "x-amz-server-side-encryption-aws-kms-key-id":
					return f.scalar(&obj.KMSKeyID)
				case "x-amz-server-side-encryption-bucket-key-enabled":
					return f.scalar(&obj.BucketKeyEnabled)
				case "x-amz-copy-source":
					var v string
					if !f.scalar(&v) {
						return false
					}
					obj.CopySourceBucket = copySourceBucket(v)
					return true
				}
				return false // an encryption configuration or ObjectEncryption: decodeRecord reads them
			})
		case "responseElements":
			if f.peek() != '{' {
				return f.skip(1)
			}
			return f.object(1, responseFields, true, func(string) bool { return f.scalar(&obj.ResponseSSE) })
		case "additionalEventData":
			if f.peek() != '{' {
				return f.skip(1)
			}
			start := f.i
			if !f.object(1, additionalFields, false, func(string) bool { return f.text((*text)(&obj.SSEApplied)) }) {
				return false
			}
			r.AdditionalData = json.RawMessage(raw[start:f.i]) // availabilityZone, read by normaliseBucket when needed
			return true
		}
		// resources
		if f.null() {
			return true
		}
		return f.array(1, func() bool {
			var res rawResource
			if !f.object(2, resourceFields, false, func(key string) bool {
				switch key {
				case "type":
					return f.text(&res.Type)
				case "ARN":
					return f.text(&res.ARN)
				}
				return f.text(&res.AccountID)
			}) {
				return false
			}
			if build {
				resources = append(resources, res)
			}
			return true
		})
	})
	if !ok || r.EventSource == "" || r.EventName == "" {
		return nil, 0, false, false
	}
	n = f.i
	probe := Event{Name: string(r.EventName), Source: string(r.EventSource)}
	if !probe.IsDataEvent() {
		return nil, 0, false, false
	}
	if sseC != "" {
		sseC = "SSE-C"
	}
	obj.Requested = firstNonEmpty(sseC, sse)
	probe.Object = obj
	if !probe.DataMatters() || !build {
		return nil, n, probe.DataMatters(), true
	}
	if hasID {
		ident := id
		if hasSC {
			ident.SessionContext = new(struct {
				SessionIssuer *struct {
					ARN text `json:"arn"`
				} `json:"sessionIssuer"`
			})
			if hasIssuer {
				ident.SessionContext.SessionIssuer = &struct {
					ARN text `json:"arn"`
				}{ARN: issuerARN}
			}
		}
		r.UserIdentity = &ident
	}
	r.Resources = resources
	p.object = obj
	return buildEvent(&r, p, &obj, raw[:n]), n, true, true
}

// The fields the scanner reads, per object, as encoding/json names them
// (the map keys of requestParameters and responseElements lowered).
var (
	recordFields = []string{"eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent",
		"errorCode", "errorMessage", "eventID", "recipientAccountId", "userIdentity", "requestParameters", "responseElements",
		"additionalEventData", "resources"}
	identityFields = []string{"type", "principalId", "arn", "accountId", "accessKeyId", "userName", "invokedBy", "sessionContext"}
	sessionFields  = []string{"sessionIssuer"}
	issuerFields   = []string{"arn"}
	paramFields    = []string{"bucketname", "host", "key", "x-amz-server-side-encryption", "x-amz-server-side-encryption-customer-algorithm",
		"x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-bucket-key-enabled", "x-amz-copy-source",
		"serversideencryptionconfiguration", "objectencryption"}
	responseFields   = []string{"x-amz-server-side-encryption"}
	additionalFields = []string{"SSEApplied"}
	resourceFields   = []string{"type", "ARN", "accountId"}
)

// fastScan is the data-event scanner's cursor over one record: b the
// bytes, s the same as one string (the events' strings are its
// substrings).
type fastScan struct {
	b []byte
	s string
	i int
}

// maxFastDepth bounds the nesting the scanner follows; deeper records go to
// encoding/json (and the decoder's nesting limit).
const maxFastDepth = 64

func (f *fastScan) ws() {
	for f.i < len(f.b) {
		switch f.b[f.i] {
		case ' ', '\t', '\n', '\r':
			f.i++
		default:
			return
		}
	}
}

func (f *fastScan) peek() byte {
	f.ws()
	if f.i < len(f.b) {
		return f.b[f.i]
	}
	return 0
}

// null consumes a null and reports whether there was one.
func (f *fastScan) null() bool {
	if f.peek() == 'n' && strings.HasPrefix(f.s[f.i:], "null") {
		f.i += 4
		return true
	}
	return false
}

// str reads a string without escapes and returns it (a substring of s).
// The record holds no control byte (hasControl), so only a backslash
// before the closing quote declines it.
func (f *fastScan) str() (string, bool) {
	if f.peek() != '"' {
		return "", false
	}
	start := f.i + 1
	j := bytes.IndexByte(f.b[start:], '"')
	if j < 0 || bytes.IndexByte(f.b[start:start+j], '\\') >= 0 {
		return "", false
	}
	f.i = start + j + 1
	return f.s[start : start+j], true
}

// text reads a value into a text field: a string without escapes, or null
// (""). Numbers and booleans, which text keeps as written, are declined.
func (f *fastScan) text(t *text) bool {
	if f.null() {
		*t = ""
		return true
	}
	v, ok := f.str()
	*t = text(v)
	return ok
}

// scalar reads a value as the scalar function does: a string, null (""),
// or an array whose first element is a string (the rest skipped).
func (f *fastScan) scalar(out *string) bool {
	switch f.peek() {
	case 'n':
		*out = ""
		return f.null()
	case '[':
		first, got := "", false
		if !f.array(3, func() bool {
			if got {
				return f.skip(4)
			}
			got = true
			var ok bool
			first, ok = f.str()
			return ok
		}) {
			return false
		}
		*out = first
		return true
	}
	v, ok := f.str()
	*out = v
	return ok
}

// object reads an object. For each key among names (compared
// case-insensitively when lowered: the map keys of requestParameters and
// responseElements, which encwatch lowers), it calls field with the name;
// other keys' values are skipped. A key with an escape or a non-ASCII
// byte, one of names twice, or (not lowered: a struct, whose fields
// encoding/json matches case-insensitively) a key equal to one of names
// only case-insensitively, is declined.
func (f *fastScan) object(depth int, names []string, lowered bool, field func(key string) bool) bool {
	if depth > maxFastDepth || f.peek() != '{' {
		return false
	}
	f.i++
	if f.peek() == '}' {
		f.i++
		return true
	}
	var seen uint64
	for {
		key, ok := f.str()
		if !ok {
			return false
		}
		for k := 0; k < len(key); k++ {
			if key[k] >= 0x80 {
				return false
			}
		}
		if f.peek() != ':' {
			return false
		}
		f.i++
		idx := -1
		for n, name := range names {
			if key == name || lowered && len(key) == len(name) && strings.EqualFold(key, name) {
				idx = n
				key = name
				break
			}
		}
		switch {
		case idx >= 0:
			if seen&(1<<idx) != 0 {
				return false
			}
			seen |= 1 << idx
			if !field(key) {
				return false
			}
		default:
			if !lowered {
				for _, name := range names {
					if len(key) == len(name) && strings.EqualFold(key, name) {
						return false
					}
				}
			}
			if !f.skip(depth + 1) {
				return false
			}
		}
		switch f.peek() {
		case ',':
			f.i++
		case '}':
			f.i++
			return true
		default:
			return false
		}
	}
}

// array reads an array, calling elem for each element.
func (f *fastScan) array(depth int, elem func() bool) bool {
	if depth > maxFastDepth || f.peek() != '[' {
		return false
	}
	f.i++
	if f.peek() == ']' {
		f.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch f.peek() {
		case ',':
			f.i++
		case ']':
			f.i++
			return true
		default:
			return false
		}
	}
}

// skip consumes one value of any type, checking its syntax as strictly as
// encoding/json does (or more).
func (f *fastScan) skip(depth int) bool {
	if depth > maxFastDepth {
		return false
	}
	switch c := f.peek(); {
	case c == '{':
		return f.object(depth, nil, true, nil) // no names: every value skipped, keys checked
	case c == '[':
		return f.array(depth, func() bool { return f.skip(depth + 1) })
	case c == '"':
		return f.skipString()
	case c == 't':
		return f.literal("true")
	case c == 'f':
		return f.literal("false")
	case c == 'n':
		return f.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return f.number()
	}
	return false
}

func (f *fastScan) literal(l string) bool {
	if strings.HasPrefix(f.s[f.i:], l) {
		f.i += len(l)
		return true
	}
	return false
}

// skipString consumes a string, escapes and all (checked).
func (f *fastScan) skipString() bool {
	j := f.i + 1
	for {
		q := bytes.IndexByte(f.b[j:], '"')
		if q < 0 {
			return false
		}
		e := bytes.IndexByte(f.b[j:j+q], '\\')
		if e < 0 {
			f.i = j + q + 1
			return true
		}
		j += e + 1 // the escaped character
		if j >= len(f.b) {
			return false
		}
		switch f.b[j] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			j++
		case 'u':
			if j+4 >= len(f.b) {
				return false
			}
			for _, h := range f.b[j+1 : j+5] {
				if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
					return false
				}
			}
			j += 5
		default:
			return false
		}
	}
}

// hasControl reports whether b holds a byte below 0x20, eight bytes at a
// time: JSON allows none in strings, and a record as CloudTrail writes it
// has none outside them; one that has any is left to encoding/json.
func hasControl(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if (w-0x2020202020202020)&^w&0x8080808080808080 != 0 {
			return true
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return true
		}
	}
	return false
}

// number consumes a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (f *fastScan) number() bool {
	b, i := f.b, f.i
	digits := func() bool {
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > s
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	f.i = i
	return true
}
