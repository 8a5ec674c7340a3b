package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/encwatch/encwatch/ingest"
)

// check is one built-in rule's test of one event. Each runs inside its own
// recovery boundary (evaluation.guard), so a rule that fails leaves the
// event's other rules running.
type check struct {
	rule string
	fn   func(*evaluation)
}

// putChecks are the rules that judge a PutBucketEncryption, in catalogue
// order.
var putChecks = []check{
	{EncryptionChangeFailed, (*evaluation).changeFailed},
	{EncryptionConfigUnreadable, (*evaluation).configUnreadable},
	{DirectoryAlgorithmUnsupported, (*evaluation).directoryAlgorithmUnsupported},
	{AlgorithmNotAllowed, (*evaluation).algorithmNotAllowed},
	{DirectoryKMSKeyAlias, (*evaluation).directoryKeyAlias},
	{KMSAWSManagedKey, (*evaluation).managedKey},
	{KMSKeyNotAllowed, (*evaluation).keyNotAllowed},
	{KMSKeyRegionMismatch, (*evaluation).keyRegionMismatch},
	{DirectoryKMSKeyChanged, (*evaluation).directoryKeyChanged},
	{BucketKeyDisabled, (*evaluation).bucketKeyDisabled},
	{SSECUnblocked, (*evaluation).sseCUnblocked},
	{KMSKeyForeignAccount, (*evaluation).keyForeignAccount},
}

// deleteChecks are the rules that judge a DeleteBucketEncryption.
var deleteChecks = []check{
	{EncryptionDeleted, (*evaluation).encryptionDeleted},
	{EncryptionChangeFailed, (*evaluation).changeFailed},
}

// callerChecks are the rules about who made a Put or Delete.
var callerChecks = []check{
	{PrincipalNotAllowed, (*evaluation).principalNotAllowed},
	{RootPrincipal, (*evaluation).rootPrincipal},
}

// firstRule returns the first rule of the request that meets cond, or nil.
func (x *evaluation) firstRule(cond func(r *ingest.EncryptionRule) bool) *ingest.EncryptionRule {
	for i := range x.ev.Encryption.Rules {
		if r := &x.ev.Encryption.Rules[i]; cond(r) {
			return r
		}
	}
	return nil
}

func (x *evaluation) isDirectory() bool { return x.ev.Bucket.Type == ingest.BucketDirectory }

func dirSupported(alg string) bool { return alg == AlgAES256 || alg == AlgKMS }

func (x *evaluation) changeFailed() {
	if !x.ev.Succeeded() {
		x.add(EncryptionChangeFailed, Medium, x.ev.Name+" on "+x.bucketDesc()+" failed with "+x.ev.ErrorCode)
	}
}

func (x *evaluation) configUnreadable() {
	if x.ev.Succeeded() && !x.ev.Encryption.Readable() {
		x.add(EncryptionConfigUnreadable, Medium, "PutBucketEncryption on "+x.bucketDesc()+" succeeded but its request shows no algorithm")
	}
}

func (x *evaluation) directoryAlgorithmUnsupported() {
	if !x.isDirectory() {
		return
	}
	if r := x.firstRule(func(r *ingest.EncryptionRule) bool { return r.Algorithm != "" && !dirSupported(r.Algorithm) }); r != nil {
		x.add(DirectoryAlgorithmUnsupported, Medium, "PutBucketEncryption on "+x.bucketDesc()+" names "+r.Algorithm+", which directory buckets do not support")
	}
}

func (x *evaluation) algorithmNotAllowed() {
	if !x.ev.Succeeded() {
		return
	}
	allowed := x.e.policy.AllowedAlgorithms(x.ev.Bucket)
	dir := x.isDirectory()
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		// An algorithm a directory bucket cannot take is
		// directory-algorithm-unsupported's, not this rule's.
		return r.Algorithm != "" && !slices.Contains(allowed, r.Algorithm) && !(dir && !dirSupported(r.Algorithm))
	})
	if r != nil {
		x.add(AlgorithmNotAllowed, High, "PutBucketEncryption set "+r.Algorithm+" on "+x.bucketDesc()+"; the policy allows "+strings.Join(allowed, ", "))
	}
}

func (x *evaluation) directoryKeyAlias() {
	if !x.isDirectory() {
		return
	}
	if r := x.firstRule(func(r *ingest.EncryptionRule) bool { return IsAlias(r.KMSKeyID) }); r != nil {
		x.add(DirectoryKMSKeyAlias, Medium, "PutBucketEncryption on "+x.bucketDesc()+" gives the KMS key as alias "+r.KMSKeyID+"; directory buckets need a key ID or ARN")
	}
}

func (x *evaluation) managedKey() {
	if !x.ev.Succeeded() {
		return
	}
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		return (r.Algorithm == AlgKMS && r.KMSKeyID == "") || IsManagedAlias(r.KMSKeyID)
	})
	if r == nil {
		return
	}
	sev, what := Medium, "the AWS managed key aws/s3"
	if x.isDirectory() {
		sev = High
	}
	if r.KMSKeyID == "" {
		what = "no key, so the AWS managed key aws/s3"
	}
	x.add(KMSAWSManagedKey, sev, "PutBucketEncryption set "+r.Algorithm+" with "+what+" on "+x.bucketDesc())
}

func (x *evaluation) keyNotAllowed() {
	if !x.ev.Succeeded() {
		return
	}
	if r := x.firstRule(func(r *ingest.EncryptionRule) bool { return r.KMSKeyID != "" && !x.e.policy.KeyAllowed(r.KMSKeyID) }); r != nil {
		x.add(KMSKeyNotAllowed, High, "PutBucketEncryption set KMS key "+r.KMSKeyID+" on "+x.bucketDesc()+", which policy.allowedKMSKeys does not allow")
	}
}

func (x *evaluation) keyRegionMismatch() {
	region := x.ev.Region
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		kr := KeyRegion(r.KMSKeyID)
		return kr != "" && region != "" && kr != region
	})
	if r != nil {
		x.add(KMSKeyRegionMismatch, Medium, "PutBucketEncryption on "+x.bucketDesc()+" in "+region+" names KMS key "+r.KMSKeyID+" in "+KeyRegion(r.KMSKeyID))
	}
}

// directoryKeyChanged fires when a Put on a directory bucket names a
// customer managed key other than the one an earlier event set on it.
func (x *evaluation) directoryKeyChanged() {
	if !x.isDirectory() || x.known.LifetimeKey == "" {
		return
	}
	life := x.known.LifetimeKey
	r := x.firstRule(func(r *ingest.EncryptionRule) bool { k := customerKey(*r); return k != "" && k != life })
	if r != nil {
		x.add(DirectoryKMSKeyChanged, High, "PutBucketEncryption on "+x.bucketDesc()+" names KMS key "+r.KMSKeyID+", but the bucket was set to key "+
			life+" earlier (event "+firstOr(x.known.LifetimeKeyEventID, "unknown")+"); directory buckets keep one key for life")
	}
}

func (x *evaluation) bucketKeyDisabled() {
	if !x.ev.Succeeded() {
		return
	}
	r := x.firstRule(func(r *ingest.EncryptionRule) bool { return r.Algorithm == AlgKMS && !r.BucketKeyEnabled })
	if r == nil {
		return
	}
	sev, state := Low, "absent"
	if x.isDirectory() {
		sev = Medium
	}
	if r.BucketKeySet {
		state = "false"
	}
	x.add(BucketKeyDisabled, sev, "PutBucketEncryption set SSE-KMS on "+x.bucketDesc()+" with BucketKeyEnabled "+state)
}

// sseCUnblocked fires when a Put names BlockedEncryptionTypes and no rule
// of it lists SSE-C. A Put that names none says nothing of SSE-C.
func (x *evaluation) sseCUnblocked() {
	enc := x.ev.Encryption
	if !x.ev.Succeeded() || !enc.NamesBlocked() || enc.BlocksSSEC() || !x.e.policy.RequireSSECBlocked(x.ev.Bucket) {
		return
	}
	named := strings.Join(enc.Blocked(), ", ")
	if named == "" {
		named = "nothing readable"
	}
	x.add(SSECUnblocked, High, "PutBucketEncryption on "+x.bucketDesc()+" sets BlockedEncryptionTypes to "+named+
		": SSE-C is no longer blocked, so anyone with s3:PutObject can write objects under a key only they hold")
}

func (x *evaluation) encryptionDeleted() {
	if !x.ev.Succeeded() {
		return
	}
	sev := High
	if slices.Contains(x.e.policy.AllowedAlgorithms(x.ev.Bucket), AlgAES256) {
		sev = Low
	}
	x.add(EncryptionDeleted, sev, "default encryption deleted on "+x.bucketDesc()+": the bucket is back on SSE-S3 (AES256)")
}

func (x *evaluation) callerDesc() string {
	if a := x.ev.Actor.ARN; a != "" {
		return a
	}
	return "a caller without ARN (" + firstOr(x.ev.Actor.Type, "unknown type") + ")"
}

func (x *evaluation) principalNotAllowed() {
	if x.ev.Succeeded() && !x.e.policy.PrincipalAllowed(x.ev.Actor) {
		x.add(PrincipalNotAllowed, High, fmt.Sprintf("%s on %s by %s, which policy.allowedPrincipals does not allow", x.ev.Name, x.bucketDesc(), x.callerDesc()))
	}
}

func (x *evaluation) rootPrincipal() {
	if x.ev.Succeeded() && x.ev.Actor.Type == "Root" {
		x.add(RootPrincipal, High, fmt.Sprintf("%s on %s by the account root user", x.ev.Name, x.bucketDesc()))
	}
}

// readBurst counts a GetBucketEncryption towards its caller's window and
// fires when it starts a burst.
func (x *evaluation) readBurst() error {
	ev := x.ev
	caller := firstOr(ev.Actor.ARN, ev.Actor.PrincipalID, ev.Actor.InvokedBy, ev.SourceIP)
	if caller == "" {
		caller = "unknown"
	}
	key := ev.Account + "|" + caller
	rd, _, err := x.st.Reads(key)
	if err != nil {
		return err
	}
	rb := x.e.policy.ReadBurst
	fire, n := rd.observe(StateKey(ev.Bucket), x.at, rb.Window.D(), rb.Buckets)
	if err := x.st.PutReads(key, rd); err != nil {
		return err
	}
	if fire {
		x.addCount(EncryptionReadBurst, Low, fmt.Sprintf("%s read the encryption of %d distinct buckets within %s", caller, n, rb.Window.D()), n)
	}
	return nil
}

func firstOr(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// customerKey returns a rule's key normalised to a key ID when it names a
// customer managed key (not an alias, not the managed key).
func customerKey(r ingest.EncryptionRule) string {
	if r.KMSKeyID == "" || IsAlias(r.KMSKeyID) {
		return ""
	}
	return KeyID(r.KMSKeyID)
}

// severity is a rule's severity after the policy's overrides.
func (x *evaluation) severity(id string, sev Severity) Severity {
	if s, ok := x.e.policy.Severity[id]; ok {
		return s
	}
	return sev
}

// sameConfig reports whether a Put sets exactly what st knew.
func sameConfig(st BucketState, enc ingest.Encryption) bool {
	if len(enc.Rules) == 0 {
		return false
	}
	r := enc.Rules[0]
	return st.Algorithm == r.Algorithm && st.KMSKeyID == r.KMSKeyID && st.BucketKeyEnabled == r.BucketKeyEnabled &&
		slices.Equal(st.BlockedEncryptionTypes, enc.Blocked())
}

// repeats marks a successful Put's findings with whether it changed the
// bucket's configuration and, with policy.repeats.window, drops those of
// an unchanged Put whose rule fired on the bucket within the window.
func (x *evaluation) repeats() {
	if x.known.Algorithm == "" && x.known.LastEvent == "" {
		return // nothing known: changed stays null
	}
	changed := !sameConfig(x.known, x.ev.Encryption)
	window := x.e.policy.Repeats.Window.D()
	kept := x.findings[:0]
	for _, f := range x.findings {
		f.Changed = &changed
		if !changed && window > 0 && f.Rule != "" {
			if last, ok := x.known.Fired[f.Rule]; ok && !x.ev.Time.Before(last) && x.ev.Time.Sub(last) < window {
				if x.e.onSuppress != nil {
					x.e.onSuppress(f.Rule, "unchanged")
				}
				continue
			}
		}
		kept = append(kept, f)
	}
	x.findings = kept
}
