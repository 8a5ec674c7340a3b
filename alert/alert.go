// Package alert turns findings into alerts in the encwatch.alert/v1 format
// and writes them.
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// Schema names the alert format.
const Schema = "encwatch.alert/v1"

// Alert is one finding in the encwatch.alert/v1 format.
type Alert struct {
	Schema      string      `json:"schema"`
	ID          string      `json:"id"`
	Rule        string      `json:"rule"`
	Severity    string      `json:"severity"`
	Summary     string      `json:"summary"`
	DetectedAt  time.Time   `json:"detectedAt"`
	Bucket      Bucket      `json:"bucket"`
	Event       Event       `json:"event"`
	Encryption  *Encryption `json:"encryption,omitempty"`
	Remediation string      `json:"remediation"`
	// Basis is what the finding judged: "event", a CloudTrail record, or
	// "inventory", a configuration read by a scan.
	Basis string `json:"basis"`
	// Action is what the remediate sink did or would do, on its
	// remediation-applied and remediation-skipped alerts.
	Action *Action `json:"action,omitempty"`
	// Count is how many occurrences a grouped alert stands for.
	Count int `json:"count,omitempty"`
	// Origin says where the record was read (file and record, S3 key, ...).
	Origin string `json:"origin,omitempty"`
}

// Action is one remediation: the finding it answers, what it read and
// wrote (or would write, in a dry run), or why it did nothing.
type Action struct {
	Finding  string `json:"finding"` // the alert id it answers
	Rule     string `json:"rule"`    // that alert's rule
	DryRun   bool   `json:"dryRun"`
	Read     []Rule `json:"read,omitempty"`     // the configuration GetBucketEncryption returned
	Written  []Rule `json:"written,omitempty"`  // what PutBucketEncryption was (or would be) given
	Restores string `json:"restores,omitempty"` // where the configuration written back was last seen (event or scan id)
	Reason   string `json:"reason,omitempty"`   // why nothing was written
	Error    string `json:"error,omitempty"`
	Changed  *bool  `json:"changed,omitempty"` // false when the bucket already had what would be written
}

// Bucket is the bucket an alert concerns.
type Bucket struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	ARN     string `json:"arn"`
	Account string `json:"account"`
	Region  string `json:"region"`
	Zone    string `json:"zone"`
}

// Event is the CloudTrail event an alert is about.
type Event struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Time         string `json:"time"`
	Source       string `json:"source"`
	Region       string `json:"region"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage,omitempty"`
	Actor        Actor  `json:"actor"`
	SourceIP     string `json:"sourceIP"`
	UserAgent    string `json:"userAgent"`
}

// Actor is the caller.
type Actor struct {
	Type      string `json:"type"`
	ARN       string `json:"arn"`
	AccountID string `json:"accountId"`
	// SessionIssuerARN is the role ARN of an assumed-role caller.
	SessionIssuerARN string `json:"sessionIssuerArn,omitempty"`
}

// Encryption is what a PutBucketEncryption request set: the first rule's
// settings, and every rule when the request held several.
type Encryption struct {
	Algorithm        string `json:"algorithm"`
	KMSKeyID         string `json:"kmsKeyId"`
	BucketKeyEnabled bool   `json:"bucketKeyEnabled"`
	// BlockedEncryptionTypes is every EncryptionType the request's
	// BlockedEncryptionTypes named; null when it named none.
	BlockedEncryptionTypes []string `json:"blockedEncryptionTypes"`
	// Changed is false when the request set exactly the configuration
	// encwatch already knew for the bucket, null when it knew none.
	Changed *bool  `json:"changed"`
	Rules   []Rule `json:"rules,omitempty"`
}

// Bases of a finding: a CloudTrail event, or a scan's read of a bucket's
// current configuration (then event.name is GetBucketEncryption, event.time
// the time of the read, event.actor empty, and event.id derived from the
// bucket ARN and a digest of what was read).
const (
	BasisEvent     = "event"
	BasisInventory = "inventory"
)

// Rule is one rule of a request's configuration.
type Rule struct {
	Algorithm              string   `json:"algorithm"`
	KMSKeyID               string   `json:"kmsKeyId"`
	BucketKeyEnabled       bool     `json:"bucketKeyEnabled"`
	BlockedEncryptionTypes []string `json:"blockedEncryptionTypes,omitempty"`
}

// ID returns the deterministic alert id: the same rule on the same event in
// the same account always gives the same id, so consumers and replicas can
// deduplicate.
func ID(rule, account, eventKey string) string {
	h := sha256.New()
	h.Write([]byte(Schema))
	for _, s := range []string{rule, account, eventKey} {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// New builds the alert of a finding, detected at now.
func New(f rules.Finding, now time.Time) Alert {
	ev := f.Event
	bucket, account, key := ev.Bucket, ev.Account, ev.Key()
	if f.Bucket != nil {
		// One finding per bucket of one event (a KMS key several buckets
		// use): the bucket is part of the identity.
		bucket, account, key = *f.Bucket, f.Bucket.Account, key+"|"+f.Bucket.ARN
		if account == "" {
			account = ev.Account
		}
	}
	a := Alert{
		Schema:      Schema,
		ID:          ID(f.Rule, account, key),
		Rule:        f.Rule,
		Severity:    f.Severity.String(),
		Summary:     f.Summary,
		DetectedAt:  now.UTC(),
		Remediation: f.Remediation,
		Basis:       BasisEvent,
		Count:       f.Count,
		Bucket: Bucket{
			Name: bucket.Name, Type: bucket.Type, ARN: bucket.ARN,
			Account: bucket.Account, Region: bucket.Region, Zone: bucket.Zone,
		},
		Event: Event{
			ID: ev.ID, Name: ev.Name, Time: ev.TimeRaw, Source: ev.Source, Region: ev.Region,
			ErrorCode: ev.ErrorCode, ErrorMessage: ev.ErrorMsg,
			Actor:    Actor{Type: ev.Actor.Type, ARN: ev.Actor.ARN, AccountID: ev.Actor.AccountID, SessionIssuerARN: ev.Actor.IssuerARN},
			SourceIP: ev.SourceIP, UserAgent: ev.UserAgent,
		},
	}
	if !ev.Time.IsZero() {
		a.Event.Time = ev.Time.Format(time.RFC3339)
	}
	if ev.Origin.Source != "" {
		a.Origin = ev.Origin.String()
	}
	if ev.Inventory != nil {
		a.Basis = BasisInventory
	}
	if (ev.Name == ingest.PutBucketEncryption || ev.Inventory != nil) && len(ev.Encryption.Rules) > 0 {
		r := ev.Encryption.Rules[0]
		a.Encryption = &Encryption{Algorithm: r.Algorithm, KMSKeyID: r.KMSKeyID, BucketKeyEnabled: r.BucketKeyEnabled,
			BlockedEncryptionTypes: ev.Encryption.Blocked(), Changed: f.Changed}
		if len(ev.Encryption.Rules) > 1 {
			for _, r := range ev.Encryption.Rules {
				a.Encryption.Rules = append(a.Encryption.Rules, Rule{Algorithm: r.Algorithm, KMSKeyID: r.KMSKeyID, BucketKeyEnabled: r.BucketKeyEnabled,
					BlockedEncryptionTypes: r.BlockedEncryptionTypes})
			}
		}
	}
	return a
}
