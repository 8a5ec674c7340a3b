package rules

import (
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
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
	// Bucket, when set, is the bucket the finding is about where the event
	// concerns something else (a KMS key the bucket depends on).
	Bucket *ingest.Bucket
	// Changed, on a finding of a Put, is false when the Put set exactly
	// the configuration encwatch knew for the bucket, nil when it knew none.
	Changed *bool
	// Count is the number of occurrences a grouped finding stands for
	// (distinct buckets for encryption-read-burst); 0 otherwise.
	Count int
}

// Names under which failures outside one rule are reported: recording what
// an event set on its bucket, and closing the windows of grouped rules.
const (
	ruleState   = "state"
	ruleWindows = "windows"
)

// RuleError is a rule that failed on one event: it returned an error or
// panicked. The rule is skipped for that event; the others still run.
type RuleError struct {
	Rule   string
	Custom bool          // a custom (CEL) rule
	Event  *ingest.Event // nil when the rule failed closing a window
	Err    error
	Stack  []byte // the goroutine's stack for a panic, nil otherwise
}

func (e *RuleError) Error() string { return "rule " + e.Rule + ": " + e.Err.Error() }

func (e *RuleError) Unwrap() error { return e.Err }

// ErrPanic is wrapped by the error of a rule that panicked.
var ErrPanic = errors.New("rule panicked")

// Engine applies the policy and the catalogue to events. Evaluate is safe
// for concurrent use, but stateful rules assume events come roughly in
// eventTime order, so callers feed one stream at a time.
type Engine struct {
	mu          sync.Mutex
	policy      Policy
	state       State
	disabled    map[string]bool
	custom      []*Compiled
	onRuleError func(*RuleError)
	onKMSCopy   func(bucketType string)
	onSuppress  func(rule, reason string)
	swept       time.Time // event time of the last sweep of closed windows
	clock       func() time.Time
}

// MaxClockSkew is how far in the future of the process clock an event's
// time may be for windows: a later eventTime (a broken or hostile record,
// a skewed clock) counts as now plus this, so that it cannot hold windows
// open or move them ahead of every other event.
const MaxClockSkew = 15 * time.Minute

// SetClock sets the clock windows are bounded by (default time.Now).
func (e *Engine) SetClock(now func() time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clock = now
}

// windowTime is the time an event counts at in windows: its eventTime, at
// most MaxClockSkew after now.
func (e *Engine) windowTime(ev *ingest.Event) time.Time {
	now := time.Now
	if e.clock != nil {
		now = e.clock
	}
	if lim := now().Add(MaxClockSkew); ev.Time.After(lim) {
		return lim
	}
	return ev.Time
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
	e := &Engine{policy: p, state: st, disabled: map[string]bool{}, custom: custom}
	for _, id := range p.Disabled {
		e.disabled[id] = true
	}
	return e, nil
}

// OnRuleError sets the function told when a rule, built-in or custom,
// fails on an event (an error, a panic, a custom rule's cost limit); the
// rule is skipped for that event and the others go on. It is called with
// the engine's lock held, so it must not call back into the engine.
func (e *Engine) OnRuleError(fn func(*RuleError)) { e.onRuleError = fn }

// OnSuppressed sets the function told of each finding not raised because
// policy.repeats says so (reason "unchanged").
func (e *Engine) OnSuppressed(fn func(rule, reason string)) { e.onSuppress = fn }

// Custom returns the custom rules in force.
func (e *Engine) Custom() []*Compiled { return e.custom }

// Policy returns the policy in force.
func (e *Engine) Policy() Policy { return e.policy }

// evaluation gathers the findings of one event.
type evaluation struct {
	e        *Engine
	st       State
	ev       *ingest.Event
	key      string      // the bucket's state key
	at       time.Time   // the event's time for windows (windowTime)
	known    BucketState // what was known of the bucket before the event
	findings []Finding
}

func (x *evaluation) add(id string, sev Severity, summary string) {
	x.addWith(id, sev, summary, Lookup(id).Remediation, 0)
}

func (x *evaluation) addCount(id string, sev Severity, summary string, n int) {
	x.addWith(id, sev, summary, Lookup(id).Remediation, n)
}

func (x *evaluation) addWith(id string, sev Severity, summary, remediation string, count int) {
	if x.e.disabled[id] {
		return
	}
	if s, ok := x.e.policy.Severity[id]; ok {
		sev = s
	}
	x.findings = append(x.findings, Finding{Rule: id, Severity: sev, Summary: summary, Remediation: remediation, Event: x.ev, Count: count})
}

// guard runs one rule's work inside a recovery boundary. A panic is
// reported as that rule's failure and swallowed; an error is returned to
// the caller.
func (x *evaluation) guard(rule string, fn func() error) error {
	return x.protect(rule, false, fn)
}

func (x *evaluation) protect(rule string, custom bool, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			x.fail(&RuleError{Rule: rule, Custom: custom, Event: x.ev, Err: fmt.Errorf("%w: %v", ErrPanic, r), Stack: debug.Stack()})
			err = nil
		}
	}()
	return fn()
}

func (x *evaluation) fail(re *RuleError) {
	if x.e.onRuleError != nil {
		x.e.onRuleError(re)
	}
}

// run runs the enabled checks of a list, each in its own boundary.
func (x *evaluation) run(checks []check) {
	for _, c := range checks {
		if x.e.disabled[c.rule] {
			continue
		}
		_ = x.guard(c.rule, func() error { c.fn(x); return nil })
	}
}

// matches runs one custom rule on the event inside its recovery
// boundary; a failure is reported and counts as no match.
func (x *evaluation) matches(c *Compiled) bool {
	var ok bool
	err := x.protect(c.ID, true, func() error {
		var err error
		ok, err = c.Match(x.ev)
		return err
	})
	if err != nil {
		x.fail(&RuleError{Rule: c.ID, Custom: true, Event: x.ev, Err: err})
		return false
	}
	return ok
}

// customRules runs the organisation's CEL rules on a bucket encryption or
// data event (kmsCustomRules serves KMS events).
func (x *evaluation) customRules() {
	for _, c := range x.e.custom {
		if x.e.disabled[c.ID] {
			continue
		}
		if x.matches(c) {
			summary := c.Summary
			if summary == "" {
				summary = "custom rule " + c.ID + " matched " + x.ev.Name + " on " + x.bucketDesc()
			}
			x.addWith(c.ID, c.Severity, summary, c.Remediation, 0)
		}
	}
}

// Evaluate judges one event and returns its findings, in catalogue order.
// Events that are not encryption events give none. An error comes only
// from the state store; the findings found so far are returned with it. A
// rule that fails on the event (an error or a panic) is reported through
// OnRuleError and skipped; the event's other rules still run.
func (e *Engine) Evaluate(ev *ingest.Event) ([]Finding, error) {
	return e.EvaluateIn(e.state, ev)
}

// EvaluateIn is Evaluate with the bucket state read from and written to st
// instead of the engine's own store, such as a TxState in the transaction
// that also stores the findings.
func (e *Engine) EvaluateIn(st State, ev *ingest.Event) ([]Finding, error) {
	data := ev.IsDataEvent()
	if ev.Inventory != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		x := &evaluation{e: e, st: st, ev: ev, key: StateKey(ev.Bucket)}
		err := x.inventory()
		slices.SortStableFunc(x.findings, func(a, b Finding) int { return catalogueIndex(a.Rule) - catalogueIndex(b.Rule) })
		return x.findings, err
	}
	if ev.IsKMSEvent() {
		e.mu.Lock()
		defer e.mu.Unlock()
		x := &evaluation{e: e, st: st, ev: ev}
		if !e.disabled[KMSKeyUnusable] {
			if err := x.guard(KMSKeyUnusable, x.keyUnusable); err != nil {
				return x.findings, err
			}
		}
		err := x.guard(ruleState, x.kmsCustomRules)
		return x.findings, err
	}
	if !ev.IsEncryptionEvent() && !data {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &evaluation{e: e, st: st, ev: ev, key: StateKey(ev.Bucket), at: e.windowTime(ev)}
	// Sweep as event time advances; after a jump back of more than an hour
	// (older files, a clock put right) start again from there.
	if d := x.at.Sub(e.swept); d >= sweepEvery || d < -time.Hour {
		e.swept = x.at
		if err := x.guard(ruleWindows, func() error { return x.sweepAll(x.at) }); err != nil {
			return x.findings, err
		}
	}
	var err error
	switch {
	case data:
		err = x.data()
	case ev.Name == ingest.PutBucketEncryption:
		err = x.put()
	case ev.Name == ingest.DeleteBucketEncryption:
		err = x.delete()
	case ev.Name == ingest.GetBucketEncryption:
		if !e.disabled[EncryptionReadBurst] {
			err = x.guard(EncryptionReadBurst, x.readBurst)
		}
	}
	if err != nil {
		return x.findings, err
	}
	if data {
		return x.findings, nil
	}
	if ev.Name != ingest.GetBucketEncryption {
		x.run(callerChecks)
	}
	x.customRules()
	if ev.Name == ingest.PutBucketEncryption && ev.Succeeded() {
		if err := x.putDone(); err != nil {
			return x.findings, err
		}
	}
	slices.SortStableFunc(x.findings, func(a, b Finding) int { return catalogueIndex(a.Rule) - catalogueIndex(b.Rule) })
	return x.findings, nil
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

// loadKnown reads what encwatch knew of the event's bucket before it.
func (x *evaluation) loadKnown() error {
	st, _, err := x.st.Bucket(x.key)
	if err != nil {
		return fmt.Errorf("bucket state: %w", err)
	}
	x.known = st
	return nil
}

func (x *evaluation) put() error {
	ok := x.ev.Succeeded()
	if x.isDirectory() || ok {
		if err := x.loadKnown(); err != nil {
			return err
		}
	}
	x.run(putChecks)
	return nil
}

// putDone finishes a successful Put once every rule ran: the repeats
// policy, then what it set and which rules fired go to the bucket state.
func (x *evaluation) putDone() error {
	x.repeats()
	var first ingest.EncryptionRule
	if len(x.ev.Encryption.Rules) > 0 {
		first = x.ev.Encryption.Rules[0]
	}
	return x.guard(ruleState, func() error { return x.record(first) })
}

func (x *evaluation) delete() error {
	x.run(deleteChecks)
	if !x.ev.Succeeded() {
		return nil
	}
	if err := x.loadKnown(); err != nil {
		return err
	}
	return x.guard(ruleState, func() error { return x.record(ingest.EncryptionRule{Algorithm: AlgAES256}) })
}

// record stores what a successful Put or Delete set on the bucket.
func (x *evaluation) record(r ingest.EncryptionRule) error {
	ev := x.ev
	st := x.known
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
	if ev.Name == ingest.PutBucketEncryption {
		st.BlockedEncryptionTypes = ev.Encryption.Blocked()
		for _, f := range x.findings {
			if st.Fired == nil {
				st.Fired = map[string]time.Time{}
			}
			st.Fired[f.Rule] = ev.Time
		}
	} else {
		st.BlockedEncryptionTypes = nil
	}
	if st.KMSKeyID != x.known.KMSKeyID {
		st.KeyARN, st.KeyManager, st.KeyState = "", "", "" // what a scan said of the old key
	}
	st.Compliant = x.e.policy.configAllowed(ev.Bucket, r, st.KeyARN)
	st.Basis, st.Open = "event", openRules(x.findings)
	st.LastChange, st.LastActor, st.LastEventID, st.LastEvent = ev.Time, ev.Actor.ARN, ev.ID, ev.Name
	st.noteCompliant()
	return x.st.PutBucket(x.key, st)
}

// sweepAll closes the windows of grouped rules that ended before now and
// forgets the callers whose reads left the read-burst window.
func (x *evaluation) sweepAll(now time.Time) error {
	if err := x.sweep(now, false); err != nil {
		return err
	}
	return x.st.DropIdleReads(now, x.e.policy.ReadBurst.Window.D())
}
