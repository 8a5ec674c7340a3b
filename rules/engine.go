package rules

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/encwatch/encwatch/ingest"
)

// Finding is one rule firing on one event.
type Finding struct {
	Rule        string
	Severity    Severity
	Summary     string
	Remediation string
	Event       *ingest.Event
	// Count is the number of occurrences a grouped finding stands for
	// (distinct buckets for encryption-read-burst); 0 otherwise.
	Count int
}

// Engine applies the policy and the catalogue to events. Evaluate is safe
// for concurrent use, but stateful rules assume events come roughly in
// eventTime order, so callers feed one stream at a time.
type Engine struct {
	mu       sync.Mutex
	policy   Policy
	state    State
	disabled map[string]bool
	bursts   *burstTracker
}

// New returns an engine for a validated policy and a state store.
func New(p Policy, st State) (*Engine, error) {
	if errs := p.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("policy: %w", errs[0])
	}
	if st == nil {
		st = NewMemory()
	}
	e := &Engine{policy: p, state: st, disabled: map[string]bool{}}
	for _, id := range p.Disabled {
		e.disabled[id] = true
	}
	e.bursts = newBurstTracker(p.ReadBurst.Buckets, p.ReadBurst.Window.D())
	return e, nil
}

// Policy returns the policy in force.
func (e *Engine) Policy() Policy { return e.policy }

// evaluation gathers the findings of one event.
type evaluation struct {
	e        *Engine
	ev       *ingest.Event
	findings []Finding
}

func (x *evaluation) add(id string, sev Severity, summary string) {
	if x.e.disabled[id] {
		return
	}
	if s, ok := x.e.policy.Severity[id]; ok {
		sev = s
	}
	def := Lookup(id)
	x.findings = append(x.findings, Finding{Rule: id, Severity: sev, Summary: summary, Remediation: def.Remediation, Event: x.ev})
}

// Evaluate judges one event and returns its findings, in catalogue order.
// Events that are not encryption events give none. An error comes only
// from the state store; the findings found so far are returned with it.
func (e *Engine) Evaluate(ev *ingest.Event) ([]Finding, error) {
	if !ev.IsEncryptionEvent() {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &evaluation{e: e, ev: ev}
	var err error
	switch ev.Name {
	case ingest.PutBucketEncryption:
		err = x.put()
	case ingest.DeleteBucketEncryption:
		err = x.delete()
	case ingest.GetBucketEncryption:
		x.get()
	}
	if ev.Name != ingest.GetBucketEncryption {
		x.caller()
	}
	slices.SortStableFunc(x.findings, func(a, b Finding) int { return catalogueIndex(a.Rule) - catalogueIndex(b.Rule) })
	return x.findings, err
}

func catalogueIndex(id string) int {
	for i := range Catalogue {
		if Catalogue[i].ID == id {
			return i
		}
	}
	return len(Catalogue)
}

func (x *evaluation) bucketDesc() string {
	b := x.ev.Bucket
	name := b.Name
	if name == "" {
		name = "(unnamed)"
	}
	return b.Type + " bucket " + name
}

func (x *evaluation) delete() error {
	ev := x.ev
	if !ev.Succeeded() {
		x.add(EncryptionChangeFailed, Medium, fmt.Sprintf("DeleteBucketEncryption on %s failed with %s", x.bucketDesc(), ev.ErrorCode))
		return nil
	}
	sev := High
	if slices.Contains(x.e.policy.AllowedAlgorithms(ev.Bucket), AlgAES256) {
		sev = Low
	}
	x.add(EncryptionDeleted, sev, fmt.Sprintf("default encryption deleted on %s: the bucket is back on SSE-S3 (AES256)", x.bucketDesc()))
	return x.record(ingest.EncryptionRule{Algorithm: AlgAES256})
}

// caller applies the rules about who made a Put or Delete.
func (x *evaluation) caller() {
	ev := x.ev
	if !ev.Succeeded() {
		return
	}
	who := ev.Actor.ARN
	if who == "" {
		who = "a caller without ARN (" + firstOr(ev.Actor.Type, "unknown type") + ")"
	}
	if !x.e.policy.PrincipalAllowed(ev.Actor) {
		x.add(PrincipalNotAllowed, High, fmt.Sprintf("%s on %s by %s, which policy.allowedPrincipals does not allow", ev.Name, x.bucketDesc(), who))
	}
	if ev.Actor.Type == "Root" {
		x.add(RootPrincipal, High, fmt.Sprintf("%s on %s by the account root user", ev.Name, x.bucketDesc()))
	}
}

func (x *evaluation) get() {
	ev := x.ev
	caller := firstOr(ev.Actor.ARN, ev.Actor.PrincipalID, ev.Actor.InvokedBy, ev.SourceIP)
	if caller == "" {
		caller = "unknown"
	}
	fire, n := x.e.bursts.observe(ev.Account+"|"+caller, BucketKey(ev.Bucket), ev.Time)
	if !fire {
		return
	}
	x.add(EncryptionReadBurst, Low, fmt.Sprintf("%s read the encryption of %d distinct buckets within %s", caller, n, x.e.policy.ReadBurst.Window.D()))
	x.findings[len(x.findings)-1].Count = n
}

func firstOr(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (x *evaluation) put() error {
	ev := x.ev
	ok := ev.Succeeded()
	rules := ev.Encryption.Rules
	dir := ev.Bucket.Type == ingest.BucketDirectory
	allowed := x.e.policy.AllowedAlgorithms(ev.Bucket)
	bd := x.bucketDesc()

	if !ok {
		x.add(EncryptionChangeFailed, Medium, fmt.Sprintf("PutBucketEncryption on %s failed with %s", bd, ev.ErrorCode))
	}
	if ok && !ev.Encryption.Readable() {
		x.add(EncryptionConfigUnreadable, Medium, fmt.Sprintf("PutBucketEncryption on %s succeeded but its request shows no algorithm", bd))
	}
	dirSupported := func(alg string) bool { return alg == AlgAES256 || alg == AlgKMS }
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool { return dir && r.Algorithm != "" && !dirSupported(r.Algorithm) }); found {
		x.add(DirectoryAlgorithmUnsupported, Medium, fmt.Sprintf("PutBucketEncryption on %s names %s, which directory buckets do not support", bd, r.Algorithm))
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool {
		return ok && r.Algorithm != "" && !slices.Contains(allowed, r.Algorithm) && !(dir && !dirSupported(r.Algorithm))
	}); found {
		x.add(AlgorithmNotAllowed, High, fmt.Sprintf("PutBucketEncryption set %s on %s; the policy allows %s", r.Algorithm, bd, strings.Join(allowed, ", ")))
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool { return dir && IsAlias(r.KMSKeyID) }); found {
		x.add(DirectoryKMSKeyAlias, Medium, fmt.Sprintf("PutBucketEncryption on %s gives the KMS key as alias %s; directory buckets need a key ID or ARN", bd, r.KMSKeyID))
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool {
		return ok && ((r.Algorithm == AlgKMS && r.KMSKeyID == "") || IsManagedAlias(r.KMSKeyID))
	}); found {
		sev, what := Medium, "the AWS managed key aws/s3"
		if dir {
			sev = High
		}
		if r.KMSKeyID == "" {
			what = "no key, so the AWS managed key aws/s3"
		}
		x.add(KMSAWSManagedKey, sev, fmt.Sprintf("PutBucketEncryption set %s with %s on %s", r.Algorithm, what, bd))
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool {
		return ok && r.KMSKeyID != "" && !x.e.policy.KeyAllowed(r.KMSKeyID)
	}); found {
		x.add(KMSKeyNotAllowed, High, fmt.Sprintf("PutBucketEncryption set KMS key %s on %s, which policy.allowedKMSKeys does not allow", r.KMSKeyID, bd))
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool {
		kr := KeyRegion(r.KMSKeyID)
		return kr != "" && ev.Region != "" && kr != ev.Region
	}); found {
		x.add(KMSKeyRegionMismatch, Medium, fmt.Sprintf("PutBucketEncryption on %s in %s names KMS key %s in %s", bd, ev.Region, r.KMSKeyID, KeyRegion(r.KMSKeyID)))
	}
	if dir {
		if err := x.keyChanged(); err != nil {
			return err
		}
	}
	if r, found := firstRule(rules, func(r ingest.EncryptionRule) bool {
		return ok && r.Algorithm == AlgKMS && !r.BucketKeyEnabled
	}); found {
		sev, state := Low, "absent"
		if dir {
			sev = Medium
		}
		if r.BucketKeySet {
			state = "false"
		}
		x.add(BucketKeyDisabled, sev, fmt.Sprintf("PutBucketEncryption set SSE-KMS on %s with BucketKeyEnabled %s", bd, state))
	}
	if !ok {
		return nil
	}
	var first ingest.EncryptionRule
	if len(rules) > 0 {
		first = rules[0]
	}
	return x.record(first)
}

// customerKey returns a rule's key normalised to a key ID when it names a
// customer managed key (not an alias, not the managed key).
func customerKey(r ingest.EncryptionRule) string {
	if r.KMSKeyID == "" || IsAlias(r.KMSKeyID) {
		return ""
	}
	return KeyID(r.KMSKeyID)
}

// keyChanged fires when a Put on a directory bucket names a customer
// managed key other than the one an earlier event set on it.
func (x *evaluation) keyChanged() error {
	ev := x.ev
	st, known, err := x.e.state.Bucket(BucketKey(ev.Bucket))
	if err != nil {
		return fmt.Errorf("bucket state: %w", err)
	}
	if !known || st.LifetimeKey == "" {
		return nil
	}
	for _, r := range ev.Encryption.Rules {
		if k := customerKey(r); k != "" && k != st.LifetimeKey {
			x.add(DirectoryKMSKeyChanged, High, fmt.Sprintf("PutBucketEncryption on %s names KMS key %s, but the bucket was set to key %s earlier (event %s); directory buckets keep one key for life",
				x.bucketDesc(), r.KMSKeyID, st.LifetimeKey, firstOr(st.LifetimeKeyEventID, "unknown")))
			return nil
		}
	}
	return nil
}

// record stores what a successful Put or Delete set on the bucket.
func (x *evaluation) record(r ingest.EncryptionRule) error {
	ev := x.ev
	key := BucketKey(ev.Bucket)
	st, _, err := x.e.state.Bucket(key)
	if err != nil {
		return fmt.Errorf("bucket state: %w", err)
	}
	st.Bucket = ev.Bucket
	st.Algorithm, st.KMSKeyID, st.BucketKeyEnabled = r.Algorithm, r.KMSKeyID, r.BucketKeyEnabled
	if ev.Bucket.Type == ingest.BucketDirectory && st.LifetimeKey == "" {
		for _, rr := range ev.Encryption.Rules {
			if k := customerKey(rr); k != "" {
				st.LifetimeKey, st.LifetimeKeyEventID = k, ev.ID
				break
			}
		}
	}
	st.Compliant = r.Algorithm != "" && slices.Contains(x.e.policy.AllowedAlgorithms(ev.Bucket), r.Algorithm) &&
		(r.KMSKeyID == "" || x.e.policy.KeyAllowed(r.KMSKeyID))
	st.LastChange, st.LastActor, st.LastEventID, st.LastEvent = ev.Time, ev.Actor.ARN, ev.ID, ev.Name
	return x.e.state.PutBucket(key, st)
}

func firstRule(rules []ingest.EncryptionRule, pred func(ingest.EncryptionRule) bool) (ingest.EncryptionRule, bool) {
	for _, r := range rules {
		if pred(r) {
			return r, true
		}
	}
	return ingest.EncryptionRule{}, false
}
