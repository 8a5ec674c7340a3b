package rules

import (
	"slices"
	"strings"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// inventoryChecks judge a configuration a scan read (DESIGN 5a): the rules
// about what is set, not about who set it or how.
var inventoryChecks = []check{
	{EncryptionConfigUnreadable, (*evaluation).scanUnreadable},
	{AlgorithmNotAllowed, (*evaluation).scanAlgorithmNotAllowed},
	{KMSAWSManagedKey, (*evaluation).scanManagedKey},
	{KMSKeyNotAllowed, (*evaluation).scanKeyNotAllowed},
	{KMSKeyRegionMismatch, (*evaluation).scanKeyRegionMismatch},
	{BucketKeyDisabled, (*evaluation).scanBucketKeyDisabled},
	{SSECUnblocked, (*evaluation).scanSSECUnblocked},
	{KMSKeyForeignAccount, (*evaluation).scanKeyForeignAccount},
	{KMSKeyUnusable, (*evaluation).scanKeyUnusable},
}

// missingScans is how many complete scans may miss a bucket before it
// leaves the state.
const missingScans = 2

// inventory judges one read of a scan, or a scan's completion marker, and
// records what it read. Findings are raised only for a configuration new
// to encwatch: a read equal to the last one (same digest) raises nothing,
// and a read equal to what events set raises only the findings that do
// not already stand for it.
func (x *evaluation) inventory() error {
	inv := x.ev.Inventory
	if inv.Complete {
		return x.guard(ruleState, x.sweepMissing)
	}
	if err := x.loadKnown(); err != nil {
		return err
	}
	known := x.known
	st := known
	st.Bucket = mergeBucket(known.Bucket, x.ev.Bucket)
	st.ScannedAt, st.Missing = x.ev.Time, 0
	if inv.ErrorCode != "" {
		st.ReadError = inv.ErrorCode
		return x.st.PutBucket(x.key, st)
	}
	st.ReadError = ""
	if known.ScanDigest != "" && known.ScanDigest == x.ev.Digest {
		return x.st.PutBucket(x.key, st)
	}
	knownCfg := known.Algorithm != ""
	same := knownCfg && sameRead(known, x.ev.Encryption)
	x.run(inventoryChecks)
	x.customRules()
	if knownCfg && !same && !x.e.disabled[EncryptionDrift] {
		_ = x.guard(EncryptionDrift, func() error { x.drift(); return nil })
	}
	open := openRules(x.findings)
	if same {
		// What events set: findings already raised for it stand.
		kept := x.findings[:0]
		for _, f := range x.findings {
			if !slices.Contains(known.Open, f.Rule) {
				kept = append(kept, f)
			}
		}
		x.findings = kept
	}
	if knownCfg {
		changed := !same
		for i := range x.findings {
			x.findings[i].Changed = &changed
		}
	}
	var first ingest.EncryptionRule
	if len(x.ev.Encryption.Rules) > 0 {
		first = x.ev.Encryption.Rules[0]
	}
	st.Algorithm, st.KMSKeyID, st.BucketKeyEnabled = first.Algorithm, first.KMSKeyID, first.BucketKeyEnabled
	st.BlockedEncryptionTypes = x.ev.Encryption.Blocked()
	if st.BlockedEncryptionTypes == nil {
		st.BlockedEncryptionTypes = []string{} // a read states it, even as none
	}
	st.KeyARN, st.KeyManager, st.KeyState = inv.Key.ARN, inv.Key.Manager, inv.Key.State
	st.ScanDigest = x.ev.Digest
	st.Open = open
	st.Compliant = x.e.policy.configAllowed(st.Bucket, first, st.KeyARN)
	if x.isDirectory() && st.LifetimeKey == "" {
		if k := firstOr(KeyID(inv.Key.ARN), customerKey(first)); k != "" && inv.Key.Manager != "AWS" {
			st.LifetimeKey, st.LifetimeKeyEventID = k, x.ev.ID
		}
	}
	if !same {
		st.Basis = "inventory"
		st.LastChange, st.LastActor, st.LastEventID, st.LastEvent = x.ev.Time, "", x.ev.ID, "inventory scan"
	}
	st.noteCompliant()
	return x.st.PutBucket(x.key, st)
}

// mergeBucket keeps what events knew of a bucket that a listing does not
// say.
func mergeBucket(known, read ingest.Bucket) ingest.Bucket {
	if known.Name == "" {
		return read
	}
	b := read
	if b.Zone == "" {
		b.Zone = known.Zone
	}
	return b
}

// sameRead reports whether a read configuration is the one st knew. A read
// always states BlockedEncryptionTypes; a Put that named none leaves the
// known list nil, which matches whatever the read says.
func sameRead(st BucketState, enc ingest.Encryption) bool {
	if len(enc.Rules) == 0 {
		return false
	}
	r := enc.Rules[0]
	if st.Algorithm != r.Algorithm || st.KMSKeyID != r.KMSKeyID || st.BucketKeyEnabled != r.BucketKeyEnabled {
		return false
	}
	if st.BlockedEncryptionTypes == nil {
		return true
	}
	return slices.Equal(st.BlockedEncryptionTypes, nonNil(enc.Blocked()))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// openRules are the rules of findings, once each.
func openRules(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		if !slices.Contains(out, f.Rule) {
			out = append(out, f.Rule)
		}
	}
	return out
}

// sweepMissing runs at the end of a complete listing of an account and
// Region: buckets of the listed types that the scan did not read count one
// scan missing, and leave the state at missingScans.
func (x *evaluation) sweepMissing() error {
	inv := x.ev.Inventory
	b := x.ev.Bucket
	var gone, missed []string
	var updates []BucketState
	err := x.st.EachBucket(func(key string, st BucketState) error {
		if st.Bucket.Account != b.Account || st.Bucket.Region != b.Region || !slices.Contains(inv.Listed, st.Bucket.Type) {
			return nil
		}
		if !st.ScannedAt.Before(inv.Started) || !st.LastChange.Before(inv.Started) {
			return nil // read by this scan, or changed by an event since it began
		}
		st.Missing++
		if st.Missing >= missingScans {
			gone = append(gone, key)
			return nil
		}
		missed = append(missed, key)
		updates = append(updates, st)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range gone {
		if err := x.st.DeleteBucket(k); err != nil {
			return err
		}
	}
	for i, k := range missed {
		if err := x.st.PutBucket(k, updates[i]); err != nil {
			return err
		}
	}
	return nil
}

// keyOwner returns the account and Region of the configured key: from its
// ARN as named, else from the ARN KMS resolved it to.
func (x *evaluation) keyOwner(r *ingest.EncryptionRule) (account, region string) {
	account, region = KeyAccount(r.KMSKeyID), KeyRegion(r.KMSKeyID)
	if k := x.ev.Inventory.Key.ARN; k != "" {
		account, region = firstOr(account, KeyAccount(k)), firstOr(region, KeyRegion(k))
	}
	return account, region
}

func (x *evaluation) scanDesc() string { return "the configuration of " + x.bucketDesc() }

func (x *evaluation) scanUnreadable() {
	if !x.ev.Encryption.Readable() {
		x.add(EncryptionConfigUnreadable, Medium, "GetBucketEncryption of "+x.bucketDesc()+" returned no readable algorithm")
	}
}

func (x *evaluation) scanAlgorithmNotAllowed() {
	allowed := x.e.policy.AllowedAlgorithms(x.ev.Bucket)
	if r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		return r.Algorithm != "" && !slices.Contains(allowed, r.Algorithm)
	}); r != nil {
		x.add(AlgorithmNotAllowed, High, x.scanDesc()+" is "+r.Algorithm+"; the policy allows "+strings.Join(allowed, ", "))
	}
}

func (x *evaluation) scanManagedKey() {
	aws := x.ev.Inventory.Key.Manager == "AWS"
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		return (r.Algorithm == AlgKMS && r.KMSKeyID == "") || IsManagedAlias(r.KMSKeyID) || (r.KMSKeyID != "" && aws)
	})
	if r == nil {
		return
	}
	sev := Medium
	if x.isDirectory() {
		sev = High
	}
	what := "the AWS managed key aws/s3"
	switch {
	case r.KMSKeyID == "":
		what = "no key, so the AWS managed key aws/s3"
	case aws && !IsManagedAlias(r.KMSKeyID):
		what = "key " + r.KMSKeyID + ", which KMS says is AWS managed"
	}
	x.add(KMSAWSManagedKey, sev, x.scanDesc()+" is "+r.Algorithm+" with "+what)
}

func (x *evaluation) scanKeyNotAllowed() {
	arn := x.ev.Inventory.Key.ARN
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		return r.KMSKeyID != "" && !x.e.policy.KeyAllowed(r.KMSKeyID) && (arn == "" || !x.e.policy.KeyAllowed(arn))
	})
	if r != nil {
		x.add(KMSKeyNotAllowed, High, x.scanDesc()+" names KMS key "+r.KMSKeyID+keyAs(r.KMSKeyID, arn)+", which policy.allowedKMSKeys does not allow")
	}
}

func keyAs(named, arn string) string {
	if arn == "" || arn == named {
		return ""
	}
	return " (" + arn + ")"
}

func (x *evaluation) scanKeyRegionMismatch() {
	region := x.ev.Bucket.Region
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		_, kr := x.keyOwner(r)
		return r.KMSKeyID != "" && kr != "" && region != "" && kr != region
	})
	if r != nil {
		_, kr := x.keyOwner(r)
		x.add(KMSKeyRegionMismatch, Medium, x.scanDesc()+" in "+region+" names KMS key "+r.KMSKeyID+keyAs(r.KMSKeyID, x.ev.Inventory.Key.ARN)+" in "+kr)
	}
}

// scanBucketKeyDisabled: directory buckets always use Bucket Keys, whatever
// a read says.
func (x *evaluation) scanBucketKeyDisabled() {
	if x.isDirectory() {
		return
	}
	if r := x.firstRule(func(r *ingest.EncryptionRule) bool { return r.Algorithm == AlgKMS && !r.BucketKeyEnabled }); r != nil {
		x.add(BucketKeyDisabled, Low, x.scanDesc()+" is SSE-KMS with S3 Bucket Keys off")
	}
}

// scanSSECUnblocked: in a configuration read, SSE-C counts as blocked only
// when it lists SSE-C.
func (x *evaluation) scanSSECUnblocked() {
	enc := x.ev.Encryption
	if x.isDirectory() || enc.BlocksSSEC() || !x.e.policy.RequireSSECBlocked(x.ev.Bucket) {
		return
	}
	named := "no BlockedEncryptionTypes"
	if b := enc.Blocked(); len(b) > 0 {
		named = "BlockedEncryptionTypes " + strings.Join(b, ", ")
	}
	x.add(SSECUnblocked, High, x.scanDesc()+" has "+named+": SSE-C is not blocked, so anyone with s3:PutObject can write objects under a key only they hold")
}

func (x *evaluation) scanKeyForeignAccount() {
	bucket := x.ev.Bucket.Account
	foreign := func(r *ingest.EncryptionRule) string {
		if r.KMSKeyID == "" || IsManagedAlias(r.KMSKeyID) || bucket == "" {
			return ""
		}
		if owner, _ := x.keyOwner(r); owner != "" && owner != bucket {
			return owner
		}
		return ""
	}
	allowed := func(r *ingest.EncryptionRule) bool {
		arn := x.ev.Inventory.Key.ARN
		return len(x.e.policy.AllowedKMSKeys) > 0 && (x.e.policy.KeyAllowed(r.KMSKeyID) || (arn != "" && x.e.policy.KeyAllowed(arn)))
	}
	r := x.firstRule(func(r *ingest.EncryptionRule) bool { return foreign(r) != "" && !allowed(r) })
	if r == nil {
		return
	}
	x.add(KMSKeyForeignAccount, Critical, x.scanDesc()+" of account "+bucket+" names KMS key "+r.KMSKeyID+keyAs(r.KMSKeyID, x.ev.Inventory.Key.ARN)+
		" of account "+foreign(r)+": whoever controls that account can disable or delete it and lock the bucket's new objects")
}

// unusableStates are the key states in which a bucket's key can no longer
// encrypt.
var unusableStates = []string{"Disabled", "PendingDeletion", "PendingReplicaDeletion", "Unavailable"}

func (x *evaluation) scanKeyUnusable() {
	k := x.ev.Inventory.Key
	if !slices.Contains(unusableStates, k.State) {
		return
	}
	key := k.ARN
	if key == "" {
		if r := x.firstRule(func(r *ingest.EncryptionRule) bool { return r.KMSKeyID != "" }); r != nil {
			key = r.KMSKeyID
		}
	}
	x.add(KMSKeyUnusable, Critical, "KMS key "+key+", the default key of "+x.bucketDesc()+" (account "+x.ev.Bucket.Account+"), is "+k.State+
		": the bucket's new objects cannot be written under it, and once it is deleted its objects cannot be read")
}

func (x *evaluation) drift() {
	k := x.known
	was := describeConfig(k.Algorithm, k.KMSKeyID, k.BucketKeyEnabled, k.BlockedEncryptionTypes)
	var r ingest.EncryptionRule
	if len(x.ev.Encryption.Rules) > 0 {
		r = x.ev.Encryption.Rules[0]
	}
	now := describeConfig(r.Algorithm, r.KMSKeyID, r.BucketKeyEnabled, nonNil(x.ev.Encryption.Blocked()))
	from := "the scan of " + k.LastChange.UTC().Format(time.RFC3339)
	if k.Basis != "inventory" {
		from = k.LastEvent + " " + firstOr(k.LastEventID, "(no id)") + " at " + k.LastChange.UTC().Format(time.RFC3339)
	}
	x.add(EncryptionDrift, Medium, "the scan read "+now+" on "+x.bucketDesc()+", but encwatch last knew "+was+" (from "+from+
		") and saw no encryption event since")
}

func describeConfig(alg, key string, bucketKey bool, blocked []string) string {
	s := firstOr(alg, "no algorithm")
	if key != "" {
		s += " with key " + key
	}
	if bucketKey {
		s += ", Bucket Key on"
	}
	if blocked != nil {
		s += ", blocked " + firstOr(strings.Join(blocked, "+"), "nothing")
	}
	return s
}
