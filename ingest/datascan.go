package ingest

import (
	"bytes"
	"encoding/json"
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
	_, n, _, matters, ok := scanData(raw, unsafe.String(unsafe.SliceData(raw), len(raw)), false)
	if !ok || n != len(raw) || !matters {
		return nil, ok && n == len(raw)
	}
	ev, _, _, _, ok := scanData(raw, string(raw), true)
	return ev, ok
}

// scanDataPrefix reads the data event that starts at b[0], without
// building it: it returns the record's length, the record markers nested
// in it (objects whose first key is eventVersion, which the decoder's
// record count includes), and whether it matters to a rule. b may go on
// past the record (the decoder's buffer).
func scanDataPrefix(b []byte) (n, nested int, matters, ok bool) {
	if len(b) == 0 || b[0] != '{' {
		return 0, 0, false, false
	}
	_, n, nested, matters, ok = scanData(b, unsafe.String(unsafe.SliceData(b), len(b)), false)
	return n, nested, matters, ok
}

// scanData scans the record at the start of raw, whose bytes s holds as a
// string, and reports its length and whether it is a data event that
// matters to a rule; the event is built only when build is set (s then
// outlives the call, and raw holds the record alone).
func scanData(raw []byte, s string, build bool) (ev *Event, n, nested int, matters, ok bool) {
	d := dataScan{f: fastScan{b: raw, s: s}, build: build}
	if !d.f.object(0, recordFields, false, d.record) || d.r.EventSource == "" || d.r.EventName == "" {
		return nil, 0, 0, false, false
	}
	n, nested = d.f.i, d.f.markers
	probe := Event{Name: string(d.r.EventName), Source: string(d.r.EventSource)}
	if !probe.IsDataEvent() {
		return nil, 0, 0, false, false
	}
	if d.sseC != "" {
		d.sseC = "SSE-C"
	}
	d.obj.Requested = firstNonEmpty(d.sseC, d.sse)
	probe.Object = d.obj
	if !probe.DataMatters() || !build {
		return nil, n, nested, probe.DataMatters(), true
	}
	if d.hasID {
		ident := d.id
		if d.hasSC {
			ident.SessionContext = new(struct {
				SessionIssuer *struct {
					ARN text `json:"arn"`
				} `json:"sessionIssuer"`
			})
			if d.hasIssuer {
				ident.SessionContext.SessionIssuer = &struct {
					ARN text `json:"arn"`
				}{ARN: d.issuerARN}
			}
		}
		d.r.UserIdentity = &ident
	}
	d.r.Resources = d.resources
	d.p.object = d.obj
	return buildEvent(&d.r, d.p, &d.obj, raw[:n]), n, nested, true, true
}

// dataScan is what scanData gathers from one record, one method per
// object it reads.
type dataScan struct {
	f     fastScan
	build bool // keep what only building the event needs (resources)

	r                       rawRecord
	id                      rawIdentity
	issuerARN               text
	hasID, hasSC, hasIssuer bool
	p                       params
	obj                     ObjectRequest
	sse, sseC               string
	resources               []rawResource
}

// record reads one of recordFields.
func (d *dataScan) record(key string) bool {
	f, r := &d.f, &d.r
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
		d.hasID = true
		return f.object(1, identityFields, false, d.identity)
	case "requestParameters":
		if f.peek() != '{' {
			return f.skip(1) // not an object: no parameters
		}
		return f.object(1, paramFields, true, d.param)
	case "responseElements":
		if f.peek() != '{' {
			return f.skip(1)
		}
		return f.object(1, responseFields, true, func(string) bool { return f.scalar(&d.obj.ResponseSSE) })
	case "additionalEventData":
		if f.peek() != '{' {
			return f.skip(1)
		}
		start := f.i
		if !f.object(1, additionalFields, false, func(string) bool { return f.text((*text)(&d.obj.SSEApplied)) }) {
			return false
		}
		r.AdditionalData = json.RawMessage(f.b[start:f.i]) // availabilityZone, read by normaliseBucket when needed
		return true
	}
	// resources
	if f.null() {
		return true
	}
	return f.array(1, d.resource)
}

// identity reads one of identityFields of userIdentity.
func (d *dataScan) identity(key string) bool {
	f, id := &d.f, &d.id
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
	// sessionContext, then its sessionIssuer and that one's arn
	if f.null() {
		return true
	}
	d.hasSC = true
	return f.object(2, sessionFields, false, func(string) bool {
		if f.null() {
			return true
		}
		d.hasIssuer = true
		return f.object(3, issuerFields, false, func(string) bool { return f.text(&d.issuerARN) })
	})
}

// param reads one of paramFields of requestParameters.
func (d *dataScan) param(key string) bool {
	f := &d.f
	switch key {
	case "bucketname":
		return f.scalar(&d.p.bucketName)
	case "host":
		return f.scalar(&d.p.host)
	case "key":
		return f.scalar(&d.obj.Key)
	case "x-amz-server-side-encryption":
		return f.scalar(&d.sse)
	case "x-amz-server-side-encryption-customer-algorithm":
		return f.scalar(&d.sseC)
	case "x-amz-server-side-encryption-aws-kms-key-id":
		return f.scalar(&d.obj.KMSKeyID)
	case "x-amz-server-side-encryption-bucket-key-enabled":
		return f.scalar(&d.obj.BucketKeyEnabled)
	case "x-amz-copy-source":
		var v string
		if !f.scalar(&v) {
			return false
		}
		d.obj.CopySourceBucket = copySourceBucket(v)
		return true
	}
	return false // an encryption configuration or ObjectEncryption: decodeRecord reads them
}

// resource reads one element of resources.
func (d *dataScan) resource() bool {
	var res rawResource
	if !d.f.object(2, resourceFields, false, func(key string) bool {
		switch key {
		case "type":
			return d.f.text(&res.Type)
		case "ARN":
			return d.f.text(&res.ARN)
		}
		return d.f.text(&res.AccountID)
	}) {
		return false
	}
	if d.build {
		d.resources = append(d.resources, res)
	}
	return true
}

// The fields the scanner reads, per object, as encoding/json names them
// (the map keys of requestParameters and responseElements lowered).
var (
	recordFields = newFieldNames("eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent",
		"errorCode", "errorMessage", "eventID", "recipientAccountId", "userIdentity", "requestParameters", "responseElements",
		"additionalEventData", "resources")
	identityFields = newFieldNames("type", "principalId", "arn", "accountId", "accessKeyId", "userName", "invokedBy", "sessionContext")
	sessionFields  = newFieldNames("sessionIssuer")
	issuerFields   = newFieldNames("arn")
	paramFields    = newFieldNames("bucketname", "host", "key", "x-amz-server-side-encryption", "x-amz-server-side-encryption-customer-algorithm",
		"x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-bucket-key-enabled", "x-amz-copy-source",
		"serversideencryptionconfiguration", "objectencryption")
	responseFields   = newFieldNames("x-amz-server-side-encryption")
	additionalFields = newFieldNames("SSEApplied")
	resourceFields   = newFieldNames("type", "ARN", "accountId")
)
