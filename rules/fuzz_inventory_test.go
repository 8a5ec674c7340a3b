package rules

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// inventoryRules are the rules a scan's read may raise (DESIGN 5a).
var inventoryRules = []string{AlgorithmNotAllowed, KMSAWSManagedKey, KMSKeyNotAllowed, KMSKeyRegionMismatch, BucketKeyDisabled,
	SSECUnblocked, KMSKeyForeignAccount, KMSKeyUnusable, EncryptionConfigUnreadable, EncryptionDrift}

// FuzzInventoryRead feeds the engine reads of a scan with whatever a
// GetBucketEncryption answer and DescribeKey may hold (an answer is data
// someone configured), interleaved with an event on the same bucket and a
// completion marker: the engine never errs or panics, raises only the
// rules of a configuration, never a caller's, and a second identical read
// raises nothing.
func FuzzInventoryRead(f *testing.F) {
	f.Add("AES256", "", false, "NONE", "", "", "", "plain", true)
	f.Add("aws:kms", "alias/x", true, "SSE-C", "arn:aws:kms:us-east-1:999988887777:key/k", "CUSTOMER", "PendingDeletion", "d--usw2-az1--x-s3", false)
	f.Add("aws:kms:dsse", "arn:aws:kms:eu-west-1:111122223333:key/k", false, "", "", "AWS", "Disabled", "x", true)
	f.Add("", "\x00<script>", true, "SSE-C,NONE", "arn:aws:kms:::", "", "", "--x-s3", false)
	f.Fuzz(func(t *testing.T, alg, key string, bucketKey bool, blocked, keyARN, manager, state, name string, eventFirst bool) {
		p := DefaultPolicy()
		p.AllowedKMSKeys = []string{"arn:aws:kms:*:111122223333:key/*"}
		e, err := New(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		var errs []*RuleError
		e.OnRuleError(func(re *RuleError) { errs = append(errs, re) })
		b := ingest.NewBucket(name, "111122223333", "us-east-1")
		at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		if eventFirst {
			ev := &ingest.Event{ID: "put", Name: ingest.PutBucketEncryption, Source: ingest.SourceS3, Time: at.Add(-time.Hour), Region: b.Region, Account: b.Account, Bucket: b,
				Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "aws:kms", KMSKeyID: "k1"}}}}
			if _, err := e.Evaluate(ev); err != nil {
				t.Fatal(err)
			}
		}
		r := ingest.EncryptionRule{Algorithm: alg, KMSKeyID: key, BucketKeyEnabled: bucketKey, BucketKeySet: true}
		if blocked != "" {
			r.BlockedEncryptionTypes = strings.Split(blocked, ",")
		}
		read := func(t0 time.Time) *ingest.Event {
			return ingest.NewInventoryRead(b, ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{r}}, ingest.KeyInfo{ARN: keyARN, Manager: manager, State: state},
				t0, ingest.InventoryOrigin(b.Account, b.Region))
		}
		fs, err := e.Evaluate(read(at))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if !slices.Contains(inventoryRules, f.Rule) {
				t.Errorf("a read raised %s, not a configuration rule", f.Rule)
			}
		}
		again, err := e.Evaluate(read(at.Add(6 * time.Hour)))
		if err != nil || len(again) != 0 {
			t.Errorf("the same read again raised %v (%v)", again, err)
		}
		if _, err := e.Evaluate(ingest.NewScanComplete(b.Account, b.Region, []string{b.Type}, at.Add(7*time.Hour), at.Add(8*time.Hour))); err != nil {
			t.Fatal(err)
		}
		if len(errs) > 0 {
			t.Errorf("rule errors: %v", errs[0])
		}
	})
}
