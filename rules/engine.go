package rules

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

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
	mu        sync.Mutex
	policy    Policy
	state     State
	disabled  map[string]bool
	bursts    *burstTracker
	custom    []*Compiled
	onError   func(rule string, err error)
	onKMSCopy func(bucketType string)
	swept     time.Time // event time of the last sweep of closed windows
}

// New returns an engine for a validated policy, a state store (nil: in
// memory) and compiled custom rules.
func New(p Policy, st State, custom ...*Compiled) (*Engine, error) {
	ids := make([]string, len(custom))
	for i, c := range custom {
		ids[i] = c.ID
	}
	if errs := p.Validate(ids...); len(errs) > 0 {
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
	e.custom = custom
	return e, nil
}

// OnCustomError sets the function told when a custom rule fails on an
// event (an evaluation error, or its cost limit exceeded); the rule is
// skipped for that event and the others go on.
func (e *Engine) OnCustomError(fn func(rule string, err error)) { e.onError = fn }

// Custom returns the custom rules in force.
func (e *Engine) Custom() []*Compiled { return e.custom }

// TakeBursts hands the read-burst windows of old to e, so that a reload
// with the same readBurst settings does not forget who was reading.
func (e *Engine) TakeBursts(old *Engine) {
	if old == nil || old.policy.ReadBurst != e.policy.ReadBurst {
		return
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	e.bursts = old.bursts
}

// Policy returns the policy in force.
func (e *Engine) Policy() Policy { return e.policy }

// evaluation gathers the findings of one event.
type evaluation struct {
	e        *Engine
	st       State
	ev       *ingest.Event
	key      string // the bucket's state key
	findings []Finding
}

func (x *evaluation) add(id string, sev Severity, summary string) {
	x.addWith(id, sev, summary, Lookup(id).Remediation)
}

func (x *evaluation) addWith(id string, sev Severity, summary, remediation string) {
	if x.e.disabled[id] {
		return
	}
	if s, ok := x.e.policy.Severity[id]; ok {
		sev = s
	}
	x.findings = append(x.findings, Finding{Rule: id, Severity: sev, Summary: summary, Remediation: remediation, Event: x.ev})
}

// customRules runs the organisation's CEL rules on the event.
func (x *evaluation) customRules() {
	for _, c := range x.e.custom {
		if x.e.disabled[c.ID] {
			continue
		}
		ok, err := c.Match(x.ev)
		if err != nil {
			if x.e.onError != nil {
				x.e.onError(c.ID, err)
			}
			continue
		}
		if ok {
			summary := c.Summary
			if summary == "" {
				summary = "custom rule " + c.ID + " matched " + x.ev.Name + " on " + x.bucketDesc()
			}
			x.addWith(c.ID, c.Severity, summary, c.Remediation)
		}
	}
}

// Evaluate judges one event and returns its findings, in catalogue order.
// Events that are not encryption events give none. An error comes only
// from the state store; the findings found so far are returned with it.
func (e *Engine) Evaluate(ev *ingest.Event) ([]Finding, error) {
	return e.EvaluateIn(e.state, ev)
}

// EvaluateIn is Evaluate with the bucket state read from and written to st
// instead of the engine's own store, such as a TxState in the transaction
// that also stores the findings.
func (e *Engine) EvaluateIn(st State, ev *ingest.Event) ([]Finding, error) {
	data := ev.IsDataEvent()
	if !ev.IsEncryptionEvent() && !data {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &evaluation{e: e, st: st, ev: ev, key: BucketKey(ev.Bucket)}
	if ev.Time.Sub(e.swept) >= sweepEvery {
		e.swept = ev.Time
		if err := x.sweep(ev.Time, false); err != nil {
			return x.findings, err
		}
	}
	if data {
		err := x.data()
		return x.findings, err
	}
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
	x.customRules()
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
	x.add(EncryptionDeleted, sev, "default encryption deleted on "+x.bucketDesc()+": the bucket is back on SSE-S3 (AES256)")
	st, _, err := x.st.Bucket(x.key)
	if err != nil {
		return fmt.Errorf("bucket state: %w", err)
	}
	return x.record(st, ingest.EncryptionRule{Algorithm: AlgAES256})
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

// putMatches holds, for each rule-level condition, the first rule of the
// request that meets it (nil when none does).
type putMatches struct {
	dirUnsupported, notAllowed, alias, managed, keyNotAllowed, region, bucketKey *ingest.EncryptionRule
}

func (x *evaluation) match(dir, ok bool, allowed []string) putMatches {
	var m putMatches
	ev := x.ev
	for i := range ev.Encryption.Rules {
		r := &ev.Encryption.Rules[i]
		alg, key := r.Algorithm, r.KMSKeyID
		dirSupported := alg == AlgAES256 || alg == AlgKMS
		if m.dirUnsupported == nil && dir && alg != "" && !dirSupported {
			m.dirUnsupported = r
		}
		if m.notAllowed == nil && ok && alg != "" && !slices.Contains(allowed, alg) && !(dir && !dirSupported) {
			m.notAllowed = r
		}
		if m.alias == nil && dir && IsAlias(key) {
			m.alias = r
		}
		if m.managed == nil && ok && ((alg == AlgKMS && key == "") || IsManagedAlias(key)) {
			m.managed = r
		}
		if m.keyNotAllowed == nil && ok && key != "" && !x.e.policy.KeyAllowed(key) {
			m.keyNotAllowed = r
		}
		if kr := KeyRegion(key); m.region == nil && kr != "" && ev.Region != "" && kr != ev.Region {
			m.region = r
		}
		if m.bucketKey == nil && ok && alg == AlgKMS && !r.BucketKeyEnabled {
			m.bucketKey = r
		}
	}
	return m
}

func (x *evaluation) put() error {
	ev := x.ev
	ok := ev.Succeeded()
	dir := ev.Bucket.Type == ingest.BucketDirectory
	allowed := x.e.policy.AllowedAlgorithms(ev.Bucket)
	bd := x.bucketDesc()
	m := x.match(dir, ok, allowed)

	if !ok {
		x.add(EncryptionChangeFailed, Medium, "PutBucketEncryption on "+bd+" failed with "+ev.ErrorCode)
	}
	if ok && !ev.Encryption.Readable() {
		x.add(EncryptionConfigUnreadable, Medium, "PutBucketEncryption on "+bd+" succeeded but its request shows no algorithm")
	}
	if r := m.dirUnsupported; r != nil {
		x.add(DirectoryAlgorithmUnsupported, Medium, "PutBucketEncryption on "+bd+" names "+r.Algorithm+", which directory buckets do not support")
	}
	if r := m.notAllowed; r != nil {
		x.add(AlgorithmNotAllowed, High, "PutBucketEncryption set "+r.Algorithm+" on "+bd+"; the policy allows "+strings.Join(allowed, ", "))
	}
	if r := m.alias; r != nil {
		x.add(DirectoryKMSKeyAlias, Medium, "PutBucketEncryption on "+bd+" gives the KMS key as alias "+r.KMSKeyID+"; directory buckets need a key ID or ARN")
	}
	if r := m.managed; r != nil {
		sev, what := Medium, "the AWS managed key aws/s3"
		if dir {
			sev = High
		}
		if r.KMSKeyID == "" {
			what = "no key, so the AWS managed key aws/s3"
		}
		x.add(KMSAWSManagedKey, sev, "PutBucketEncryption set "+r.Algorithm+" with "+what+" on "+bd)
	}
	if r := m.keyNotAllowed; r != nil {
		x.add(KMSKeyNotAllowed, High, "PutBucketEncryption set KMS key "+r.KMSKeyID+" on "+bd+", which policy.allowedKMSKeys does not allow")
	}
	if r := m.region; r != nil {
		x.add(KMSKeyRegionMismatch, Medium, "PutBucketEncryption on "+bd+" in "+ev.Region+" names KMS key "+r.KMSKeyID+" in "+KeyRegion(r.KMSKeyID))
	}
	var st BucketState
	if dir || ok {
		var err error
		if st, _, err = x.st.Bucket(x.key); err != nil {
			return fmt.Errorf("bucket state: %w", err)
		}
	}
	if dir {
		x.keyChanged(st)
	}
	if r := m.bucketKey; r != nil {
		sev, state := Low, "absent"
		if dir {
			sev = Medium
		}
		if r.BucketKeySet {
			state = "false"
		}
		x.add(BucketKeyDisabled, sev, "PutBucketEncryption set SSE-KMS on "+bd+" with BucketKeyEnabled "+state)
	}
	if !ok {
		return nil
	}
	var first ingest.EncryptionRule
	if len(ev.Encryption.Rules) > 0 {
		first = ev.Encryption.Rules[0]
	}
	return x.record(st, first)
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
func (x *evaluation) keyChanged(st BucketState) {
	if st.LifetimeKey == "" {
		return
	}
	for _, r := range x.ev.Encryption.Rules {
		if k := customerKey(r); k != "" && k != st.LifetimeKey {
			x.add(DirectoryKMSKeyChanged, High, "PutBucketEncryption on "+x.bucketDesc()+" names KMS key "+r.KMSKeyID+", but the bucket was set to key "+
				st.LifetimeKey+" earlier (event "+firstOr(st.LifetimeKeyEventID, "unknown")+"); directory buckets keep one key for life")
			return
		}
	}
}

// record stores what a successful Put or Delete set on the bucket.
func (x *evaluation) record(st BucketState, r ingest.EncryptionRule) error {
	ev := x.ev
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
	return x.st.PutBucket(x.key, st)
}
