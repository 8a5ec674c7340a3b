package rules

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// sweepEvery is how far event time must advance before closed windows are
// looked for again.
const sweepEvery = time.Minute

// DataRulesOn reports whether any data-event rule is enabled, so that the
// decoders read data events at all.
func (e *Engine) DataRulesOn() bool {
	for _, id := range DataRules {
		if !e.disabled[id] {
			return true
		}
	}
	return false
}

// OnKMSCopy sets the function told of every SSE-KMS copy involving a
// directory bucket, by the directory bucket's side (for a cost metric).
func (e *Engine) OnKMSCopy(fn func(bucketType string)) { e.onKMSCopy = fn }

// requestedSetting names what a data event asked for: the algorithm, and
// the key when it named one.
func requestedSetting(o ingest.ObjectRequest) string {
	alg := o.Requested
	if alg == "" {
		switch o.SSEApplied {
		case "SSE_S3":
			alg = AlgAES256
		case "SSE_KMS":
			alg = AlgKMS
		case "SSE_C":
			alg = "SSE-C"
		}
	}
	if o.KMSKeyID != "" {
		return alg + " " + o.KMSKeyID
	}
	return alg
}

// data judges a data event: it opens or counts the windows of the grouped
// rules; findings come when a window closes.
func (x *evaluation) data() error {
	ev := x.ev
	if !ev.Succeeded() {
		return nil
	}
	if !x.e.disabled[ObjectEncryptionOverride] {
		if err := x.guard(ObjectEncryptionOverride, x.objectOverride); err != nil {
			return err
		}
	}
	if err := x.guard(DirectoryKMSCopyCost, x.kmsCopy); err != nil {
		return err
	}
	if ev.Name == ingest.UpdateObjectEncryption && !x.e.disabled[ObjectEncryptionRekeyed] {
		return x.guard(ObjectEncryptionRekeyed, x.rekeyed)
	}
	return nil
}

// rekeyed counts an UpdateObjectEncryption: low, high when its key is
// another account's (as kms-key-foreign-account judges a bucket's key) or
// outside allowedKMSKeys.
func (x *evaluation) rekeyed() error {
	ev := x.ev
	key := ev.Object.KMSKeyID
	sev := Low
	r := ingest.EncryptionRule{Algorithm: AlgKMS, KMSKeyID: key}
	foreign := x.foreignKeyAccount(&r) != "" && !(len(x.e.policy.AllowedKMSKeys) > 0 && x.e.policy.KeyAllowed(key))
	if foreign || (key != "" && !x.e.policy.KeyAllowed(key)) {
		sev = High
	}
	caller := firstOr(ev.Actor.ARN, ev.Actor.PrincipalID, ev.Actor.InvokedBy, "unknown caller")
	return x.count(ObjectEncryptionRekeyed+"|"+x.key+"|"+caller+"|"+key, ObjectEncryptionRekeyed, sev, key)
}

// objectOverride counts a data event that named its own encryption.
func (x *evaluation) objectOverride() error {
	ev := x.ev
	o := ev.Object
	switch ev.Name {
	case ingest.PutObject, ingest.CopyObject, ingest.CreateMultipartUpload, ingest.CreateSession:
		if o.Overrides() {
			setting := requestedSetting(o)
			alg, _, _ := strings.Cut(setting, " ")
			sev := Low
			if !slices.Contains(x.e.policy.AllowedAlgorithms(ev.Bucket), alg) {
				sev = Medium
			}
			if alg == "SSE-C" {
				// On a directory bucket SSE-C is unsupported; on a general
				// purpose bucket it is the second step of SSE-C ransomware.
				sev = High
			}
			caller := firstOr(ev.Actor.ARN, ev.Actor.PrincipalID, ev.Actor.InvokedBy, "unknown caller")
			key := ObjectEncryptionOverride + "|" + x.key + "|" + caller + "|" + setting
			return x.count(key, ObjectEncryptionOverride, sev, setting)
		}
	}
	return nil
}

// kmsCopy counts an SSE-KMS copy involving a directory bucket.
func (x *evaluation) kmsCopy() error {
	ev := x.ev
	o := ev.Object
	switch ev.Name {
	case ingest.CopyObject, ingest.UploadPartCopy:
		srcDir := strings.HasSuffix(o.CopySourceBucket, "--x-s3")
		if (ev.Bucket.Type == ingest.BucketDirectory || srcDir) && o.KMS() {
			if x.e.onKMSCopy != nil {
				x.e.onKMSCopy(ev.Bucket.Type)
			}
			if !x.e.disabled[DirectoryKMSCopyCost] {
				return x.count(DirectoryKMSCopyCost+"|"+x.key, DirectoryKMSCopyCost, Info, "")
			}
		}
	}
	return nil
}

// count adds the event to its group's window, closing the old window first
// when the event falls past it.
func (x *evaluation) count(key, rule string, sev Severity, setting string) error {
	ev := x.ev
	window := x.e.policy.DataEvents.Window.D()
	g, ok, err := x.st.Group(key)
	if err != nil {
		return err
	}
	if ok && !x.at.Before(g.Start.Add(window)) {
		if err := x.close(g); err != nil {
			return err
		}
		ok = false
	}
	if !ok {
		first := *ev
		g = Group{Key: key, Rule: rule, Severity: sev, Setting: setting, Start: x.at, First: &first}
	}
	g.Count++
	if sev > g.Severity {
		g.Severity = sev
	}
	return x.st.PutGroup(g)
}

// close turns a group into its finding and forgets it.
func (x *evaluation) close(g Group) error {
	if err := x.st.DeleteGroup(g.Key); err != nil {
		return err
	}
	first := g.First
	if first == nil {
		return nil
	}
	window := x.e.policy.DataEvents.Window.D()
	times := "once"
	if g.Count > 1 {
		times = fmt.Sprintf("%d times", g.Count)
	}
	var summary string
	switch g.Rule {
	case ObjectEncryptionOverride:
		def := "the bucket default is not known to encwatch (no PutBucketEncryption seen)"
		if st, ok, _ := x.st.Bucket(StateKey(first.Bucket)); ok && st.Algorithm != "" {
			def = "the default is " + st.Algorithm
			if st.KMSKeyID != "" {
				def += " with key " + st.KMSKeyID
			}
		}
		who := firstOr(first.Actor.ARN, first.Actor.PrincipalID, "an unknown caller")
		summary = fmt.Sprintf("%s on %s bucket %s asked for %s %s within %s (from %s, by %s); %s",
			first.Name, first.Bucket.Type, first.Bucket.Name, g.Setting, times, shortDuration(window), g.Start.Format(time.RFC3339), who, def)
	case ObjectEncryptionRekeyed:
		who := firstOr(first.Actor.ARN, first.Actor.PrincipalID, "an unknown caller")
		key := firstOr(g.Setting, "no key named")
		note := ""
		if g.Severity >= High {
			note = "; the key belongs to another account or is outside policy.allowedKMSKeys"
		}
		summary = fmt.Sprintf("UpdateObjectEncryption re-keyed objects of %s bucket %s to SSE-KMS key %s %s within %s (from %s, by %s)%s",
			first.Bucket.Type, first.Bucket.Name, key, times, shortDuration(window), g.Start.Format(time.RFC3339), who, note)
	case DirectoryKMSCopyCost:
		summary = fmt.Sprintf("%d SSE-KMS copies involving directory bucket %s within %s (from %s): S3 Bucket Keys do not apply to copies, so each is a KMS request",
			g.Count, first.Bucket.Name, shortDuration(window), g.Start.Format(time.RFC3339))
	}
	sev := g.Severity
	if s, ok := x.e.policy.Severity[g.Rule]; ok {
		sev = s
	}
	x.findings = append(x.findings, Finding{Rule: g.Rule, Severity: sev, Summary: summary, Remediation: Lookup(g.Rule).Remediation, Event: first, Count: g.Count})
	return nil
}

// sweep closes the windows that ended before now.
func (x *evaluation) sweep(now time.Time, all bool) error {
	window := x.e.policy.DataEvents.Window.D()
	return x.st.ForEachGroup(func(g Group) error {
		if all || !now.Before(g.Start.Add(window)) {
			return x.guard(g.Rule, func() error { return x.close(g) })
		}
		return nil
	})
}

// Expire raises the findings of every window that ended before now; the
// daemon calls it on a timer so that a quiet stream still closes windows.
func (e *Engine) Expire(st State, now time.Time) ([]Finding, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &evaluation{e: e, st: st}
	err := x.sweep(now, false)
	return x.findings, err
}

// Flush raises the findings of every open window, ended or not: the end of
// a replay.
func (e *Engine) Flush(st State) ([]Finding, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &evaluation{e: e, st: st}
	err := x.sweep(time.Time{}, true)
	return x.findings, err
}

// shortDuration writes 1h rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
