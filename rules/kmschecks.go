package rules

import (
	"fmt"
	"strings"

	"github.com/encwatch/encwatch/ingest"
)

// foreignKeyAccount returns the account a rule's key belongs to when that
// is not the bucket's: the account of a key or alias ARN, or, on a general
// purpose bucket, the caller's account for an alias name or key ID (they
// resolve in the requester's account).
func (x *evaluation) foreignKeyAccount(r *ingest.EncryptionRule) string {
	key, bucket := r.KMSKeyID, x.ev.Bucket.Account
	if key == "" || bucket == "" || IsManagedAlias(key) {
		return ""
	}
	owner := KeyAccount(key)
	if owner == "" && x.ev.Bucket.Type != ingest.BucketDirectory {
		owner = x.ev.Actor.AccountID
	}
	if owner == "" || owner == bucket {
		return ""
	}
	return owner
}

func (x *evaluation) keyForeignAccount() {
	if !x.ev.Succeeded() {
		return
	}
	r := x.firstRule(func(r *ingest.EncryptionRule) bool {
		return x.foreignKeyAccount(r) != "" && !(len(x.e.policy.AllowedKMSKeys) > 0 && x.e.policy.KeyAllowed(r.KMSKeyID))
	})
	if r == nil {
		return
	}
	owner := x.foreignKeyAccount(r)
	how := "a key of account " + owner
	if KeyAccount(r.KMSKeyID) == "" {
		how = "a key that resolves in the caller's account " + owner
	}
	x.add(KMSKeyForeignAccount, Critical, "PutBucketEncryption on "+x.bucketDesc()+" of account "+x.ev.Bucket.Account+" sets KMS key "+r.KMSKeyID+
		", "+how+": whoever controls that account can disable or delete it and lock the bucket's new objects")
}

// keyUnusable fires, once per bucket, when a KMS key that is some known
// bucket's default key is disabled, scheduled for deletion or deleted.
func (x *evaluation) keyUnusable() error {
	ev := x.ev
	switch ev.Name {
	case ingest.ScheduleKeyDeletion, ingest.DisableKey, ingest.DeleteKey:
	default:
		return nil
	}
	key := ev.KMS.Key()
	id := KeyID(key)
	if !ev.Succeeded() || id == "" {
		return nil
	}
	var what string
	switch ev.Name {
	case ingest.ScheduleKeyDeletion:
		what = "scheduled for deletion"
		if d := ev.KMS.DeletionDate; d != "" {
			what += " on " + d
		}
		if n := ev.KMS.PendingWindowInDays; n > 0 {
			what += fmt.Sprintf(" (in %d days)", n)
		}
		if ev.KMS.KeyState == "PendingReplicaDeletion" {
			what += ", once its replicas are deleted"
		}
		what += ": the bucket's new objects cannot be written while it is pending deletion, and its objects can never be read once it is deleted"
	case ingest.DisableKey:
		what = "disabled: the bucket's objects can be neither written nor read under it until it is enabled again"
	case ingest.DeleteKey:
		what = "deleted: the bucket's objects encrypted under it can never be read again"
	}
	by := ""
	if a := ev.Actor.ARN; a != "" {
		by = " by " + a
	}
	buckets, err := x.bucketsUsing(key)
	for _, b := range buckets {
		x.findings = append(x.findings, Finding{Rule: KMSKeyUnusable, Severity: x.severity(KMSKeyUnusable, Critical),
			Summary:     "KMS key " + key + ", the default key of " + b.Type + " bucket " + b.Name + " (account " + b.Account + "), was " + what + by,
			Remediation: Lookup(KMSKeyUnusable).Remediation, Event: ev, Bucket: &b})
	}
	return err
}

// bucketsUsing returns the known buckets whose default key is key: the
// same key ID, SSE-KMS or DSSE-KMS, and, where both sides say, the same
// account and Region. A key ARN names its account and Region; a key the
// bucket names by ID is in the bucket's Region. Multi-Region keys share
// their ID across Regions, so a replica elsewhere is another key.
func (x *evaluation) bucketsUsing(key string) ([]ingest.Bucket, error) {
	id := KeyID(key)
	if id == "" {
		return nil, nil
	}
	var out []ingest.Bucket
	err := x.st.EachBucket(func(_ string, st BucketState) error {
		// An alias matches through the key the inventory resolved it to.
		bk := firstOr(st.KeyARN, st.KMSKeyID)
		if bk == "" || KeyID(bk) != id || !strings.HasPrefix(st.Algorithm, AlgKMS) {
			return nil
		}
		if ka, sa := KeyAccount(key), KeyAccount(bk); ka != "" && sa != "" && ka != sa {
			return nil
		}
		kr, sr := firstOr(KeyRegion(key), x.ev.Region), firstOr(KeyRegion(bk), st.Bucket.Region)
		if kr != "" && sr != "" && kr != sr {
			return nil
		}
		out = append(out, st.Bucket)
		return nil
	})
	return out, err
}

// kmsCustomRules runs the custom rules that name kms on a KMS lifecycle
// event: a match raises one finding per known bucket whose default key the
// event's key is (an alert is always about a bucket), none when no known
// bucket uses it.
func (x *evaluation) kmsCustomRules() error {
	var buckets []ingest.Bucket
	looked := false
	for _, c := range x.e.custom {
		if x.e.disabled[c.ID] || !c.kms || !x.matches(c) {
			continue
		}
		if !looked {
			looked = true
			var err error
			if buckets, err = x.bucketsUsing(x.ev.KMS.Key()); err != nil {
				return err
			}
		}
		for _, b := range buckets {
			summary := c.Summary
			if summary == "" {
				summary = "custom rule " + c.ID + " matched " + x.ev.Name + " of KMS key " + x.ev.KMS.Key()
			}
			summary += " (the default key of " + b.Type + " bucket " + b.Name + ")"
			sev := x.severity(c.ID, c.Severity)
			x.findings = append(x.findings, Finding{Rule: c.ID, Severity: sev, Summary: summary, Remediation: c.Remediation, Event: x.ev, Bucket: &b})
		}
	}
	return nil
}
