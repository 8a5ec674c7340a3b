// Package ingest reads CloudTrail data in every envelope AWS and its tools
// produce, and turns the records that concern S3 default encryption into
// normalised events.
package ingest

import (
	"slices"
	"strings"
	"time"
)

// Event names and sources that make a record an encryption event.
const (
	SourceS3        = "s3.amazonaws.com"
	SourceS3Express = "s3express.amazonaws.com"

	PutBucketEncryption    = "PutBucketEncryption"
	GetBucketEncryption    = "GetBucketEncryption"
	DeleteBucketEncryption = "DeleteBucketEncryption"

	// Data events that can set or move an object's encryption.
	PutObject             = "PutObject"
	CopyObject            = "CopyObject"
	CreateMultipartUpload = "CreateMultipartUpload"
	UploadPartCopy        = "UploadPartCopy"
	// UpdateObjectEncryption (January 2026) changes an existing object's
	// SSE-KMS key in place.
	UpdateObjectEncryption = "UpdateObjectEncryption"
	CreateSession          = "CreateSession"

	// KMS key lifecycle events, which every source reads: the first three
	// make a key unusable, the last two undo that.
	SourceKMS           = "kms.amazonaws.com"
	ScheduleKeyDeletion = "ScheduleKeyDeletion"
	DisableKey          = "DisableKey"
	DeleteKey           = "DeleteKey"
	CancelKeyDeletion   = "CancelKeyDeletion"
	EnableKey           = "EnableKey"
)

// KMSLifecycleEvents are the KMS events encwatch reads, in the order the
// LookupEvents tailer asks for the three that make a key unusable first.
var KMSLifecycleEvents = []string{ScheduleKeyDeletion, DisableKey, DeleteKey, CancelKeyDeletion, EnableKey}

// Bucket types as the alert format names them.
const (
	BucketGeneralPurpose = "general-purpose"
	BucketDirectory      = "directory"
)

// Event is one CloudTrail record about S3 default encryption, normalised.
// Fields a record lacks are empty, never an error.
type Event struct {
	ID        string    // eventID
	Name      string    // eventName
	Source    string    // eventSource
	Time      time.Time // eventTime; zero when missing or unreadable
	TimeRaw   string    // eventTime as written
	Region    string    // awsRegion
	Version   string    // eventVersion
	ErrorCode string
	ErrorMsg  string
	SourceIP  string
	UserAgent string
	Account   string // recipientAccountId, else the bucket's, else the caller's
	Actor     Actor
	Bucket    Bucket
	// Encryption is what a PutBucketEncryption request set. It is empty for
	// Get and Delete.
	Encryption Encryption
	// Object is what a data event asked of an object's encryption; empty
	// for management events.
	Object ObjectRequest
	// KMS is the key a KMS lifecycle event is about; empty otherwise.
	KMS KMSRequest
	// Inventory is set on an event made by a scan of the bucket's current
	// configuration (basis "inventory") rather than read from CloudTrail.
	Inventory *InventoryRead
	// Digest is a hash of the raw record, used as identity when a record has
	// no eventID.
	Digest string
	// Origin says where the record was read.
	Origin Position
}

// Succeeded reports whether the call succeeded (no errorCode).
func (e *Event) Succeeded() bool { return e.ErrorCode == "" }

// IsEncryptionEvent reports whether the event is a Put, Get or Delete of
// bucket encryption on S3 or S3 Express.
func (e *Event) IsEncryptionEvent() bool {
	if e.Source != SourceS3 && e.Source != SourceS3Express {
		return false
	}
	switch e.Name {
	case PutBucketEncryption, GetBucketEncryption, DeleteBucketEncryption:
		return true
	}
	return false
}

// IsKMSEvent reports whether the event is a KMS key lifecycle event
// (KMSLifecycleEvents).
func (e *Event) IsKMSEvent() bool {
	return e.Source == SourceKMS && slices.Contains(KMSLifecycleEvents, e.Name)
}

// InventoryRead is what a scan read of one bucket, beyond its
// configuration (which is in Event.Encryption, as a Put would set it). The
// event's Name is GetBucketEncryption, its Time the time of the read, its
// Actor empty.
type InventoryRead struct {
	// Key is what kms:DescribeKey said of the key the configuration names
	// (zero when it names none).
	Key KeyInfo
	// ErrorCode and ErrorMessage are set when the bucket's configuration
	// could not be read (AccessDenied, ...): it is unknown, not judged.
	ErrorCode, ErrorMessage string
	// Complete marks the end of one account's and Region's listing rather
	// than a bucket: every bucket of Listed types in Event.Bucket.Account
	// and Event.Bucket.Region was read in the scan that began at Started.
	Complete bool
	Listed   []string // bucket types whose listing finished
	Started  time.Time
}

// KeyInfo is what kms:DescribeKey said of a key.
type KeyInfo struct {
	ARN     string // the key's ARN, which names its account and Region
	Manager string // AWS or CUSTOMER
	State   string // Enabled, Disabled, PendingDeletion, ...
	// Error is the AWS error code when DescribeKey failed (the key is
	// judged as named).
	Error string
}

// KMSRequest is the key a KMS lifecycle event is about, as the record
// gives it.
type KMSRequest struct {
	KeyID  string // requestParameters.keyId: a key ID or key ARN, as the caller named it
	KeyARN string // responseElements.keyId, else the AWS::KMS::Key resource's ARN
	// KeyState is responseElements.keyState (PendingDeletion,
	// PendingReplicaDeletion, ...).
	KeyState string
	// DeletionDate is responseElements.deletionDate as written (AWS writes
	// forms such as "Apr 12, 2021 18:58:30 PM"; it is kept, not parsed).
	DeletionDate        string
	PendingWindowInDays int
}

// Key returns the key ARN when the record gives it, else the key as named.
func (k KMSRequest) Key() string {
	if k.KeyARN != "" {
		return k.KeyARN
	}
	return k.KeyID
}

// IsDataEvent reports whether the event is one of the S3 or S3 Express
// data events whose encryption encwatch judges.
func (e *Event) IsDataEvent() bool {
	if e.Source != SourceS3 && e.Source != SourceS3Express {
		return false
	}
	switch e.Name {
	case PutObject, CopyObject, CreateMultipartUpload, UploadPartCopy, CreateSession, UpdateObjectEncryption:
		return true
	}
	return false
}

// ObjectRequest is the encryption a data event asked for.
type ObjectRequest struct {
	Key string // object key, where the request names one
	// Requested is the algorithm the request named: AES256, aws:kms,
	// aws:kms:dsse, or SSE-C for a customer-provided key; "" when it named
	// none (the bucket default applies).
	Requested        string
	KMSKeyID         string
	BucketKeyEnabled string // as sent ("true", "false"), "" when absent
	// SSEApplied is additionalEventData.SSEApplied: Default_SSE_S3,
	// Default_SSE_KMS, SSE_S3, SSE_KMS or SSE_C.
	SSEApplied string
	// ResponseSSE is the algorithm S3 answered with (responseElements).
	ResponseSSE string
	// CopySourceBucket is the bucket a copy reads from.
	CopySourceBucket string
}

// Overrides reports whether the request named its own server-side
// encryption instead of using the bucket default.
func (o ObjectRequest) Overrides() bool {
	if o.Requested != "" {
		return true
	}
	switch o.SSEApplied {
	case "SSE_S3", "SSE_KMS", "SSE_C":
		return true
	}
	return false
}

// DataMatters reports whether a data event can matter to a data-event
// rule: it named or was given an encryption of its own
// (object-encryption-override), it is SSE-KMS (directory-kms-copy-cost
// counts such copies), or it re-keys an object (object-encryption-rekeyed).
// Every other data event (a PutObject that took the bucket default, as
// most do) changes nothing and is dropped by the decoder, so that a
// data-event trail costs little more than a management trail.
func (e *Event) DataMatters() bool {
	return e.Name == UpdateObjectEncryption || e.Object.Overrides() || e.Object.KMS()
}

// KMS reports whether the object is (or will be) encrypted with SSE-KMS.
func (o ObjectRequest) KMS() bool {
	return o.Requested == "aws:kms" || o.SSEApplied == "SSE_KMS" || o.SSEApplied == "Default_SSE_KMS" || o.ResponseSSE == "aws:kms"
}

// Key returns the identity of the event for deduplication: its eventID, or
// the digest of its raw record when it has none.
func (e *Event) Key() string {
	if e.ID != "" {
		return e.ID
	}
	return "sha256:" + e.Digest
}

// Actor is the caller of an API request (userIdentity).
type Actor struct {
	Type        string // IAMUser, AssumedRole, Root, AWSService, ...; may be empty
	ARN         string
	AccountID   string
	PrincipalID string
	UserName    string
	IssuerARN   string // sessionContext.sessionIssuer.arn (the role ARN for AssumedRole)
	InvokedBy   string
	AccessKeyID string
}

// Bucket is the bucket an event concerns.
type Bucket struct {
	Name    string
	Type    string // BucketDirectory or BucketGeneralPurpose
	ARN     string
	Account string
	Region  string
	Zone    string // availability zone ID of a directory bucket, e.g. usw2-az1
}

// Encryption is the ServerSideEncryptionConfiguration of a request.
type Encryption struct {
	// Present reports whether the request carried a configuration at all.
	Present bool
	Rules   []EncryptionRule
	// Dropped counts rules past the limit, not judged.
	Dropped int
}

// NamesBlocked reports whether some rule names BlockedEncryptionTypes.
func (c Encryption) NamesBlocked() bool {
	for _, r := range c.Rules {
		if r.BlockedEncryptionTypes != nil {
			return true
		}
	}
	return false
}

// BlocksSSEC reports whether the request blocks SSE-C: some rule of it
// lists SSE-C.
func (c Encryption) BlocksSSEC() bool {
	for _, r := range c.Rules {
		if r.BlocksSSEC() {
			return true
		}
	}
	return false
}

// Blocked returns every EncryptionType the request's rules name, in order
// and without repeats; nil when no rule names BlockedEncryptionTypes.
func (c Encryption) Blocked() []string {
	if !c.NamesBlocked() {
		return nil
	}
	out := []string{}
	for _, r := range c.Rules {
		for _, t := range r.BlockedEncryptionTypes {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// Readable reports whether at least one rule names an algorithm.
func (c Encryption) Readable() bool {
	for _, r := range c.Rules {
		if r.Algorithm != "" {
			return true
		}
	}
	return false
}

// EncryptionRule is one Rule of a ServerSideEncryptionConfiguration.
type EncryptionRule struct {
	Algorithm string // SSEAlgorithm as given: AES256, aws:kms, aws:kms:dsse, ...
	KMSKeyID  string // KMSMasterKeyID as given: key ID, key ARN, alias name, alias ARN, or empty
	// BucketKeyEnabled is true only for JSON true or the string "true".
	BucketKeyEnabled bool
	// BucketKeySet reports whether BucketKeyEnabled was present.
	BucketKeySet bool
	// BlockedEncryptionTypes are the EncryptionType values the rule's
	// BlockedEncryptionTypes names (SSE-C, NONE); nil when the rule names
	// no BlockedEncryptionTypes, which leaves the bucket's setting as it
	// was, or undocumented.
	BlockedEncryptionTypes []string
}

// BlocksSSEC reports whether the rule lists SSE-C as blocked.
func (r EncryptionRule) BlocksSSEC() bool {
	for _, t := range r.BlockedEncryptionTypes {
		if strings.EqualFold(t, "SSE-C") {
			return true
		}
	}
	return false
}

// Position says where a record was read: the source (file, S3 key, SQS
// message), the index of the record in it, and a byte offset into the
// decompressed stream.
type Position struct {
	Source string
	Index  int   // 0-based index of the record in its source
	Offset int64 // byte offset of the record in the decompressed stream
	Line   int   // 1-based line, where known
}

func (p Position) String() string {
	s := p.Source
	if s == "" {
		s = "<input>"
	}
	if p.Line > 0 {
		return s + ":" + itoa(p.Line) + " (record " + itoa(p.Index+1) + ", byte " + itoa64(p.Offset) + ")"
	}
	return s + ": record " + itoa(p.Index+1) + " (byte " + itoa64(p.Offset) + ")"
}
