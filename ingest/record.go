package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// text is a JSON scalar read as a string: strings as they are, numbers and
// booleans as written, null and anything else as empty. AWS is not always
// consistent about types, and an unexpected type must not cost the record.
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = text(s)
	case b[0] == '{' || b[0] == '[' || b[0] == 'n':
		*t = ""
	default:
		*t = text(b)
	}
	return nil
}

// rawRecord is the part of a CloudTrail record encwatch reads. Unknown fields
// are ignored.
type rawRecord struct {
	EventVersion       text            `json:"eventVersion"`
	UserIdentity       *rawIdentity    `json:"userIdentity"`
	EventTime          text            `json:"eventTime"`
	EventSource        text            `json:"eventSource"`
	EventName          text            `json:"eventName"`
	AWSRegion          text            `json:"awsRegion"`
	SourceIPAddress    text            `json:"sourceIPAddress"`
	UserAgent          text            `json:"userAgent"`
	ErrorCode          text            `json:"errorCode"`
	ErrorMessage       text            `json:"errorMessage"`
	RequestParameters  json.RawMessage `json:"requestParameters"`
	ResponseElements   json.RawMessage `json:"responseElements"`
	AdditionalData     json.RawMessage `json:"additionalEventData"`
	EventID            text            `json:"eventID"`
	Resources          []rawResource   `json:"resources"`
	RecipientAccountID text            `json:"recipientAccountId"`
}

type rawIdentity struct {
	Type           text `json:"type"`
	PrincipalID    text `json:"principalId"`
	ARN            text `json:"arn"`
	AccountID      text `json:"accountId"`
	AccessKeyID    text `json:"accessKeyId"`
	UserName       text `json:"userName"`
	InvokedBy      text `json:"invokedBy"`
	SessionContext *struct {
		SessionIssuer *struct {
			ARN text `json:"arn"`
		} `json:"sessionIssuer"`
	} `json:"sessionContext"`
}

type rawResource struct {
	Type      text `json:"type"`
	ARN       text `json:"ARN"`
	AccountID text `json:"accountId"`
}

// DecodeRecord decodes one CloudTrail record and normalises it. It does not
// judge whether the record is an encryption event; see Event.IsEncryptionEvent.
func DecodeRecord(raw []byte) (*Event, error) { return decodeRecord(raw, DefaultMaxRules) }

// decodeRecord is DecodeRecord judging at most maxRules encryption rules.
func decodeRecord(raw []byte, maxRules int) (*Event, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, ErrNotObject
	}
	var r rawRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, describeJSONError(raw, err)
	}
	if r.EventSource == "" || r.EventName == "" {
		return nil, ErrNotRecord
	}
	p := parseParams(r.RequestParameters, maxRules)
	return buildEvent(&r, p, nil, raw), nil
}

// buildEvent normalises a parsed record. obj, when set, is the data
// event's request as the data-event scanner read it; otherwise it is read
// from the record's responseElements and additionalEventData.
func buildEvent(r *rawRecord, p params, obj *ObjectRequest, raw []byte) *Event {
	sum := sha256.Sum256(raw)
	var digest [32]byte
	hex.Encode(digest[:], sum[:16])
	ev := &Event{
		ID:        string(r.EventID),
		Name:      string(r.EventName),
		Source:    string(r.EventSource),
		TimeRaw:   string(r.EventTime),
		Region:    string(r.AWSRegion),
		Version:   string(r.EventVersion),
		ErrorCode: string(r.ErrorCode),
		ErrorMsg:  string(r.ErrorMessage),
		SourceIP:  string(r.SourceIPAddress),
		UserAgent: string(r.UserAgent),
		Digest:    string(digest[:]),
	}
	if t, err := time.Parse(time.RFC3339Nano, ev.TimeRaw); err == nil {
		ev.Time = t.UTC()
	}
	if id := r.UserIdentity; id != nil {
		ev.Actor = Actor{
			Type:        string(id.Type),
			ARN:         string(id.ARN),
			AccountID:   string(id.AccountID),
			PrincipalID: string(id.PrincipalID),
			UserName:    string(id.UserName),
			InvokedBy:   string(id.InvokedBy),
			AccessKeyID: string(id.AccessKeyID),
		}
		if sc := id.SessionContext; sc != nil && sc.SessionIssuer != nil {
			ev.Actor.IssuerARN = string(sc.SessionIssuer.ARN)
		}
	}
	ev.Encryption = p.encryption
	if ev.IsDataEvent() {
		if obj != nil {
			ev.Object = *obj
		} else {
			ev.Object = objectRequest(p, r.ResponseElements, r.AdditionalData)
		}
	}
	if ev.IsKMSEvent() {
		ev.KMS = kmsRequest(r)
	} else {
		ev.Bucket = normaliseBucket(r, p, ev)
	}
	ev.Account = firstNonEmpty(string(r.RecipientAccountID), ev.Bucket.Account, ev.Actor.AccountID)
	if ev.Bucket.Account == "" && ev.Bucket.Name != "" {
		ev.Bucket.Account = ev.Account
	}
	if ev.Bucket.ARN == "" && ev.Bucket.Name != "" {
		ev.Bucket.ARN = bucketARN(ev.Bucket)
	}
	return ev
}

func normaliseBucket(r *rawRecord, p params, ev *Event) Bucket {
	b := Bucket{Name: p.bucketName, Region: ev.Region}
	for _, res := range r.Resources {
		switch string(res.Type) {
		case "AWS::S3::Bucket", "AWS::S3Express::DirectoryBucket":
			if b.ARN == "" {
				b.ARN = string(res.ARN)
				b.Account = string(res.AccountID)
			}
		}
	}
	if b.Name == "" && b.ARN != "" {
		b.Name = nameFromARN(b.ARN)
	}
	if b.Name == "" && p.host != "" {
		b.Name = nameFromHost(p.host)
	}
	if ev.Source == SourceS3Express || strings.HasSuffix(b.Name, "--x-s3") {
		b.Type = BucketDirectory
		b.Zone = zoneFromName(b.Name)
		if b.Zone == "" {
			b.Zone = availabilityZone(r.AdditionalData)
		}
	} else {
		b.Type = BucketGeneralPurpose
	}
	if b.Account == "" && b.ARN != "" {
		b.Account = accountFromARN(b.ARN)
	}
	return b
}

// nameFromARN reads the bucket name from arn:aws:s3:::NAME,
// arn:aws:s3express:REGION:ACCOUNT:bucket/NAME or the form without bucket/.
func nameFromARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 {
		return ""
	}
	return strings.TrimPrefix(parts[5], "bucket/")
}

func accountFromARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 {
		return ""
	}
	return parts[4]
}

// nameFromHost reads a virtual-hosted bucket name from a Host header such as
// NAME.s3.amazonaws.com or NAME.s3express-usw2-az1.us-west-2.amazonaws.com.
func nameFromHost(host string) string {
	for _, marker := range []string{".s3express-", ".s3.", ".s3-"} {
		if i := strings.Index(host, marker); i > 0 {
			return host[:i]
		}
	}
	return ""
}

// zoneFromName reads the zone ID of a directory bucket name
// base-name--usw2-az1--x-s3.
func zoneFromName(name string) string {
	s := strings.TrimSuffix(name, "--x-s3")
	if s == name {
		return ""
	}
	i := strings.LastIndex(s, "--")
	if i < 0 {
		return ""
	}
	return s[i+2:]
}

func availabilityZone(raw json.RawMessage) string {
	if len(raw) == 0 || raw[0] != '{' {
		return ""
	}
	var a struct {
		AZ text `json:"availabilityZone"`
	}
	_ = json.Unmarshal(raw, &a)
	return string(a.AZ)
}

func bucketARN(b Bucket) string {
	partition := Partition(b.Region)
	if b.Type == BucketDirectory {
		return "arn:" + partition + ":s3express:" + b.Region + ":" + b.Account + ":bucket/" + b.Name
	}
	return "arn:" + partition + ":s3:::" + b.Name
}

// Partition returns the ARN partition of a Region.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	case strings.HasPrefix(region, "us-iso-"):
		return "aws-iso"
	case strings.HasPrefix(region, "us-isob-"):
		return "aws-iso-b"
	}
	return "aws"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// describeJSONError turns a JSON error into one that says where in the record
// it is (line and column within the record).
func describeJSONError(raw []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(raw, se.Offset)
		return &SyntaxError{Offset: se.Offset, Line: line, Col: col, Msg: se.Error()}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: %w", te.Field, err)
	}
	return err
}

// SyntaxError is a JSON syntax error inside one record; Offset, Line and Col
// are relative to the start of the record.
type SyntaxError struct {
	Offset    int64
	Line, Col int
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at line %d column %d of the record: %s", e.Line, e.Col, e.Msg)
}

func lineCol(b []byte, off int64) (line, col int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line = 1 + bytes.Count(b[:off], []byte{'\n'})
	col = int(off) - bytes.LastIndexByte(b[:off], '\n')
	return line, col
}

func itoa(i int) string { return strconv.Itoa(i) }

func itoa64(i int64) string { return strconv.FormatInt(i, 10) }

// NewBucket describes a bucket known by name, account and Region (as a scan
// lists it): its type from the name, its zone and ARN.
func NewBucket(name, account, region string) Bucket {
	b := Bucket{Name: name, Account: account, Region: region, Type: BucketGeneralPurpose}
	if strings.HasSuffix(name, "--x-s3") {
		b.Type, b.Zone = BucketDirectory, zoneFromName(name)
	}
	b.ARN = bucketARN(b)
	return b
}
