package rules

import (
	"fmt"
	"slices"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// Policy is the organisation's encryption policy (the policy section of the
// configuration). The zero value is not valid; start from DefaultPolicy.
type Policy struct {
	DirectoryBuckets      BucketPolicy        `yaml:"directoryBuckets"`
	GeneralPurposeBuckets BucketPolicy        `yaml:"generalPurposeBuckets"`
	AllowedKMSKeys        []string            `yaml:"allowedKMSKeys"`
	AllowedPrincipals     []string            `yaml:"allowedPrincipals"`
	ReadBurst             ReadBurst           `yaml:"readBurst"`
	Buckets               []BucketOverride    `yaml:"buckets"`
	Severity              map[string]Severity `yaml:"severity"`
	Disabled              []string            `yaml:"disabled"`
	DataEvents            DataEvents          `yaml:"dataEvents"`
	Repeats               Repeats             `yaml:"repeats"`
}

// Repeats configures the suppression of findings of Puts that re-apply a
// bucket's configuration unchanged (Terraform or CloudFormation applying
// the same state again and again).
type Repeats struct {
	// Window above zero: such a finding is not raised when the same rule
	// fired on the same bucket within it. 0 (default): always raised.
	Window Duration `yaml:"window"`
}

// DataEvents configures the data-event rules.
type DataEvents struct {
	// Window groups repeats: one alert per bucket, caller and setting (or
	// per bucket for copies) per window.
	Window Duration `yaml:"window"`
}

// BucketPolicy holds the settings of one bucket type.
type BucketPolicy struct {
	AllowedAlgorithms []string `yaml:"allowedAlgorithms"`
	// RequireSSECBlocked (general purpose buckets; default true) makes
	// sse-c-unblocked fire when a Put names BlockedEncryptionTypes
	// without SSE-C.
	RequireSSECBlocked *bool `yaml:"requireSSECBlocked,omitempty"`
}

// BucketOverride replaces the allowed algorithms for buckets whose name
// matches a glob. The first matching entry wins.
type BucketOverride struct {
	Match              string   `yaml:"match"`
	AllowedAlgorithms  []string `yaml:"allowedAlgorithms"`
	RequireSSECBlocked *bool    `yaml:"requireSSECBlocked,omitempty"`
}

// ReadBurst configures encryption-read-burst.
type ReadBurst struct {
	Buckets int      `yaml:"buckets"`
	Window  Duration `yaml:"window"`
}

// DefaultPolicy returns the policy DESIGN.md gives as default.
func DefaultPolicy() Policy {
	return Policy{
		DirectoryBuckets:      BucketPolicy{AllowedAlgorithms: []string{AlgKMS}},
		GeneralPurposeBuckets: BucketPolicy{AllowedAlgorithms: []string{AlgKMS, AlgKMSDSSE}},
		ReadBurst:             ReadBurst{Buckets: 20, Window: Duration(10 * time.Minute)},
		DataEvents:            DataEvents{Window: Duration(time.Hour)},
	}
}

// FieldError is a problem with one key of the policy; Path is the key's
// path below the policy section, e.g. "buckets[0].allowedAlgorithms[1]".
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks the policy. extraRules names rule IDs besides the
// catalogue's (custom rules) that severity and disabled may name.
func (p *Policy) Validate(extraRules ...string) []FieldError {
	var errs []FieldError
	add := func(path, format string, a ...any) {
		errs = append(errs, FieldError{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	checkAlgs := func(path string, algs []string) {
		for i, a := range algs {
			if !slices.Contains(KnownAlgorithms, a) {
				add(fmt.Sprintf("%s[%d]", path, i), "unknown algorithm %q (want AES256, aws:kms or aws:kms:dsse)", a)
			}
		}
	}
	checkAlgs("directoryBuckets.allowedAlgorithms", p.DirectoryBuckets.AllowedAlgorithms)
	checkAlgs("generalPurposeBuckets.allowedAlgorithms", p.GeneralPurposeBuckets.AllowedAlgorithms)
	for i, b := range p.Buckets {
		if b.Match == "" {
			add(fmt.Sprintf("buckets[%d].match", i), "missing bucket-name glob")
		}
		if b.AllowedAlgorithms == nil && b.RequireSSECBlocked == nil {
			add(fmt.Sprintf("buckets[%d].allowedAlgorithms", i), "missing: set allowedAlgorithms, requireSSECBlocked or both")
		}
		checkAlgs(fmt.Sprintf("buckets[%d].allowedAlgorithms", i), b.AllowedAlgorithms)
	}
	for i, k := range p.AllowedKMSKeys {
		if k == "" {
			add(fmt.Sprintf("allowedKMSKeys[%d]", i), "empty entry")
		}
	}
	for i, k := range p.AllowedPrincipals {
		if k == "" {
			add(fmt.Sprintf("allowedPrincipals[%d]", i), "empty entry")
		}
	}
	if p.ReadBurst.Buckets < 1 {
		add("readBurst.buckets", "must be at least 1, got %d", p.ReadBurst.Buckets)
	}
	if p.ReadBurst.Window <= 0 {
		add("readBurst.window", "must be positive")
	}
	if p.Repeats.Window < 0 {
		add("repeats.window", "must not be negative")
	}
	if p.DataEvents.Window <= 0 {
		add("dataEvents.window", "must be positive")
	}
	known := func(id string) bool { return Lookup(id) != nil || slices.Contains(extraRules, id) }
	for _, id := range sortedKeys(p.Severity) {
		if !known(id) {
			add("severity."+id, "unknown rule id %q (see `encwatch rules`)", id)
		}
	}
	for i, id := range p.Disabled {
		if !known(id) {
			add(fmt.Sprintf("disabled[%d]", i), "unknown rule id %q (see `encwatch rules`)", id)
		}
	}
	return errs
}

// AllowedAlgorithms returns the algorithms allowed for a bucket: the first
// matching buckets entry that sets them, else the bucket type's default.
func (p *Policy) AllowedAlgorithms(b ingest.Bucket) []string {
	for _, o := range p.Buckets {
		if o.AllowedAlgorithms != nil && Glob(o.Match, b.Name) {
			return o.AllowedAlgorithms
		}
	}
	if b.Type == ingest.BucketDirectory {
		return p.DirectoryBuckets.AllowedAlgorithms
	}
	return p.GeneralPurposeBuckets.AllowedAlgorithms
}

// RequireSSECBlocked reports whether a general purpose bucket must keep
// SSE-C blocked: the first matching buckets entry that sets it, else
// generalPurposeBuckets.requireSSECBlocked (default true). Directory
// buckets do not take SSE-C at all.
func (p *Policy) RequireSSECBlocked(b ingest.Bucket) bool {
	if b.Type == ingest.BucketDirectory {
		return false
	}
	for _, o := range p.Buckets {
		if o.RequireSSECBlocked != nil && Glob(o.Match, b.Name) {
			return *o.RequireSSECBlocked
		}
	}
	if r := p.GeneralPurposeBuckets.RequireSSECBlocked; r != nil {
		return *r
	}
	return true
}

// KeyAllowed reports whether a KMS key passes allowedKMSKeys (an empty list
// allows any key).
func (p *Policy) KeyAllowed(key string) bool {
	if len(p.AllowedKMSKeys) == 0 {
		return true
	}
	for _, e := range p.AllowedKMSKeys {
		if keyAllowed(e, key) {
			return true
		}
	}
	return false
}

// PrincipalAllowed reports whether the caller passes allowedPrincipals (an
// empty list allows anyone). The caller ARN and, for an assumed role, the
// role ARN are matched; a caller without an ARN matches nothing.
func (p *Policy) PrincipalAllowed(a ingest.Actor) bool {
	if len(p.AllowedPrincipals) == 0 {
		return true
	}
	cands := []string{a.ARN}
	if a.Type == "AssumedRole" {
		cands = append(cands, a.IssuerARN)
	}
	for _, e := range p.AllowedPrincipals {
		for _, c := range cands {
			if c != "" && Glob(e, c) {
				return true
			}
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// configAllowed reports whether a configuration's algorithm and key are
// within the policy; keyARN is the key as KMS resolved it, when known.
func (p Policy) configAllowed(b ingest.Bucket, r ingest.EncryptionRule, keyARN string) bool {
	return r.Algorithm != "" && slices.Contains(p.AllowedAlgorithms(b), r.Algorithm) &&
		(r.KMSKeyID == "" || p.KeyAllowed(r.KMSKeyID) || (keyARN != "" && p.KeyAllowed(keyARN)))
}
