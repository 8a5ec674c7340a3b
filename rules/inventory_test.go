package rules

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

const (
	acct  = "111122223333"
	other = "999988887777"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func scanRead(name string, at time.Time, key ingest.KeyInfo, rules ...ingest.EncryptionRule) *ingest.Event {
	b := ingest.NewBucket(name, acct, "us-east-1")
	if b.Type == ingest.BucketDirectory {
		b = ingest.NewBucket(name, acct, "us-west-2")
	}
	return ingest.NewInventoryRead(b, ingest.Encryption{Present: true, Rules: rules}, key, at, ingest.InventoryOrigin(acct, b.Region))
}

func putEvent(id, name string, at time.Time, r ingest.EncryptionRule) *ingest.Event {
	b := ingest.NewBucket(name, acct, "us-east-1")
	src := ingest.SourceS3
	if b.Type == ingest.BucketDirectory {
		b, src = ingest.NewBucket(name, acct, "us-west-2"), ingest.SourceS3Express
	}
	return &ingest.Event{ID: id, Name: ingest.PutBucketEncryption, Source: src, Time: at, Region: b.Region, Account: acct, Bucket: b,
		Actor:      ingest.Actor{Type: "AssumedRole", ARN: "arn:aws:sts::" + acct + ":assumed-role/admin/x", AccountID: acct},
		Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{r}}}
}

func ruleIDs(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rule)
	}
	return out
}

func engine(t *testing.T) *Engine {
	t.Helper()
	e, err := New(DefaultPolicy(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func eval(t *testing.T, e *Engine, ev *ingest.Event) []string {
	t.Helper()
	fs, err := e.Evaluate(ev)
	if err != nil {
		t.Fatal(err)
	}
	return ruleIDs(fs)
}

func state(t *testing.T, e *Engine, ev *ingest.Event) BucketState {
	t.Helper()
	st, ok, err := e.state.Bucket(StateKey(ev.Bucket))
	if err != nil || !ok {
		t.Fatalf("no state for %s: %v", ev.Bucket.Name, err)
	}
	return st
}

var blockSSEC = []string{"SSE-C"}

// TestScanJudgesConfigurationOnce: a non-compliant configuration raises
// its findings at the first scan, with basis inventory and nothing about a
// caller, and never again while it does not change.
func TestScanJudgesConfigurationOnce(t *testing.T) {
	e := engine(t)
	read := scanRead("plain", t0, ingest.KeyInfo{}, ingest.EncryptionRule{Algorithm: "AES256"})
	if got := eval(t, e, read); !slices.Equal(got, []string{AlgorithmNotAllowed, SSECUnblocked}) {
		t.Fatalf("first scan: %v", got)
	}
	st := state(t, e, read)
	if st.Compliance() != NonCompliant || st.SeenBy() != "inventory" || !slices.Equal(st.Open, []string{AlgorithmNotAllowed, SSECUnblocked}) {
		t.Errorf("state = %s, seen by %s, open %v", st.Compliance(), st.SeenBy(), st.Open)
	}
	if got := eval(t, e, scanRead("plain", t0.Add(6*time.Hour), ingest.KeyInfo{}, ingest.EncryptionRule{Algorithm: "AES256"})); len(got) != 0 {
		t.Errorf("second scan of the same configuration: %v", got)
	}
	ok := scanRead("good", t0, ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/k1", Manager: "CUSTOMER", State: "Enabled"},
		ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKeyEnabled: true, BucketKeySet: true, BlockedEncryptionTypes: blockSSEC})
	if got := eval(t, e, ok); len(got) != 0 {
		t.Errorf("a compliant bucket: %v", got)
	}
	if c := state(t, e, ok).Compliance(); c != Compliant {
		t.Errorf("compliant bucket reads as %s", c)
	}
}

// TestScanUsesWhatKMSSaid: DescribeKey's answer makes a key named by
// alias AWS managed, foreign, in another Region, or unusable.
func TestScanUsesWhatKMSSaid(t *testing.T) {
	e := engine(t)
	kms := ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "alias/data", BucketKeyEnabled: true, BlockedEncryptionTypes: blockSSEC}
	tests := []struct {
		name string
		key  ingest.KeyInfo
		want []string
	}{
		{"managed", ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/aws", Manager: "AWS", State: "Enabled"}, []string{KMSAWSManagedKey}},
		{"foreign", ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + other + ":key/k2", Manager: "CUSTOMER", State: "Enabled"}, []string{KMSKeyForeignAccount}},
		{"elsewhere", ingest.KeyInfo{ARN: "arn:aws:kms:eu-west-1:" + acct + ":key/k3", Manager: "CUSTOMER", State: "Enabled"}, []string{KMSKeyRegionMismatch}},
		{"disabled", ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/k4", Manager: "CUSTOMER", State: "PendingDeletion"}, []string{KMSKeyUnusable}},
		{"fine", ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/k5", Manager: "CUSTOMER", State: "Enabled"}, nil},
	}
	for _, tt := range tests {
		if got := eval(t, e, scanRead("b-"+tt.name, t0, tt.key, kms)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestScanSeedsDirectoryKey: a directory bucket's key read by a scan is
// its key for life, so the first Put naming another raises
// directory-kms-key-changed.
func TestScanSeedsDirectoryKey(t *testing.T) {
	e := engine(t)
	const dir = "fast--usw2-az1--x-s3"
	keyARN := "arn:aws:kms:us-west-2:" + acct + ":key/k-first"
	read := scanRead(dir, t0, ingest.KeyInfo{ARN: keyARN, Manager: "CUSTOMER", State: "Enabled"},
		ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKeyEnabled: true})
	if got := eval(t, e, read); len(got) != 0 {
		t.Fatalf("scan: %v", got)
	}
	put := putEvent("put-1", dir, t0.Add(time.Hour), ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-west-2:" + acct + ":key/k-second", BucketKeyEnabled: true, BucketKeySet: true})
	if got := eval(t, e, put); !slices.Contains(got, DirectoryKMSKeyChanged) {
		t.Errorf("first Put with another key: %v, want %s", got, DirectoryKMSKeyChanged)
	}
}

// TestDrift: a read that differs from what the last event set raises
// encryption-drift (and the configuration's own findings); a read that
// equals it raises nothing the event did not already raise.
func TestDrift(t *testing.T) {
	e := engine(t)
	put := putEvent("put-1", "shop", t0, ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKeyEnabled: true, BucketKeySet: true})
	if got := eval(t, e, put); len(got) != 0 {
		t.Fatalf("put: %v", got)
	}
	key := ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/k1", Manager: "CUSTOMER", State: "Enabled"}
	same := scanRead("shop", t0.Add(time.Hour), key, ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKeyEnabled: true, BucketKeySet: true})
	// The Put named no BlockedEncryptionTypes: the read says none are
	// blocked, which is news (sse-c-unblocked), but no drift.
	if got := eval(t, e, same); !slices.Equal(got, []string{SSECUnblocked}) {
		t.Errorf("scan of what the Put set: %v", got)
	}
	drifted := scanRead("shop", t0.Add(7*time.Hour), key, ingest.EncryptionRule{Algorithm: "AES256", BlockedEncryptionTypes: blockSSEC})
	fs, err := e.Evaluate(drifted)
	if err != nil {
		t.Fatal(err)
	}
	if got := ruleIDs(fs); !slices.Equal(got, []string{AlgorithmNotAllowed, EncryptionDrift}) {
		t.Fatalf("drifted scan: %v", got)
	}
	for _, f := range fs {
		if f.Changed == nil || !*f.Changed {
			t.Errorf("%s: changed = %v, want true", f.Rule, f.Changed)
		}
	}
	// The drift is now what encwatch knows: the next scan is quiet.
	if got := eval(t, e, scanRead("shop", t0.Add(13*time.Hour), key, ingest.EncryptionRule{Algorithm: "AES256", BlockedEncryptionTypes: blockSSEC})); len(got) != 0 {
		t.Errorf("scan after the drift: %v", got)
	}
}

// TestEventAfterScanKnowsOpenFindings: a Put that sets a non-compliant
// configuration raises its findings; the scan that reads it afterwards
// raises none of them again, but a key KMS now says is disabled.
func TestEventAfterScanKnowsOpenFindings(t *testing.T) {
	e := engine(t)
	put := putEvent("put-1", "logs", t0, ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "alias/aws/s3", BlockedEncryptionTypes: blockSSEC})
	if got := eval(t, e, put); !slices.Equal(got, []string{KMSAWSManagedKey, BucketKeyDisabled}) {
		t.Fatalf("put: %v", got)
	}
	read := scanRead("logs", t0.Add(time.Hour), ingest.KeyInfo{ARN: "arn:aws:kms:us-east-1:" + acct + ":key/aws", Manager: "AWS", State: "Disabled"},
		ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "alias/aws/s3", BlockedEncryptionTypes: blockSSEC})
	if got := eval(t, e, read); !slices.Equal(got, []string{KMSKeyUnusable}) {
		t.Errorf("scan: %v, want only %s", got, KMSKeyUnusable)
	}
}

// TestKMSEventMatchesAliasThroughScan: a DisableKey of the key an alias
// resolved to reaches the bucket configured with the alias.
func TestKMSEventMatchesAliasThroughScan(t *testing.T) {
	e := engine(t)
	keyARN := "arn:aws:kms:us-east-1:" + acct + ":key/1234abcd"
	eval(t, e, scanRead("aliased", t0, ingest.KeyInfo{ARN: keyARN, Manager: "CUSTOMER", State: "Enabled"},
		ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "alias/data", BucketKeyEnabled: true, BlockedEncryptionTypes: blockSSEC}))
	dis := &ingest.Event{ID: "dis-1", Name: ingest.DisableKey, Source: ingest.SourceKMS, Time: t0.Add(time.Hour), Region: "us-east-1", Account: acct,
		KMS: ingest.KMSRequest{KeyID: "1234abcd", KeyARN: keyARN}}
	fs, err := e.Evaluate(dis)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Rule != KMSKeyUnusable || fs[0].Bucket == nil || fs[0].Bucket.Name != "aliased" {
		t.Errorf("DisableKey: %+v", fs)
	}
}

// TestMissingBucketsLeave: a bucket two complete scans did not list
// leaves the state; one missed scan keeps it.
func TestMissingBucketsLeave(t *testing.T) {
	e := engine(t)
	cfg := ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKeyEnabled: true, BlockedEncryptionTypes: blockSSEC}
	eval(t, e, scanRead("stays", t0, ingest.KeyInfo{}, cfg))
	eval(t, e, scanRead("goes", t0, ingest.KeyInfo{}, cfg))
	gp := []string{ingest.BucketGeneralPurpose, ingest.BucketDirectory}
	for i := 1; i <= 2; i++ {
		start := t0.Add(time.Duration(i) * 6 * time.Hour)
		eval(t, e, scanRead("stays", start.Add(time.Second), ingest.KeyInfo{}, cfg))
		eval(t, e, ingest.NewScanComplete(acct, "us-east-1", gp, start, start.Add(time.Minute)))
		_, ok, _ := e.state.Bucket(StateKey(ingest.NewBucket("goes", acct, "us-east-1")))
		if ok != (i == 1) {
			t.Errorf("after %d scans without it, the bucket is known: %v", i, ok)
		}
	}
	if _, ok, _ := e.state.Bucket(StateKey(ingest.NewBucket("stays", acct, "us-east-1"))); !ok {
		t.Error("a listed bucket left the state")
	}
}

// TestFutureEventTimesBounded: a record dated far in the future (a broken
// or hostile record, a skewed clock) counts at most MaxClockSkew ahead of
// the clock in windows: the data-event window it would otherwise hold
// open closes when later events pass it, and a read burst after it is
// still seen.
func TestFutureEventTimesBounded(t *testing.T) {
	p := DefaultPolicy()
	p.DataEvents.Window = Duration(time.Minute)
	e, err := New(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	e.SetClock(func() time.Time { return now })
	b := ingest.NewBucket("uploads", acct, "us-east-1")
	put := func(id string, at time.Time) []string {
		ev := &ingest.Event{ID: id, Name: ingest.PutObject, Source: ingest.SourceS3, Time: at, Region: "us-east-1", Account: acct, Bucket: b,
			Actor:  ingest.Actor{Type: "IAMUser", ARN: "arn:aws:iam::" + acct + ":user/u", AccountID: acct},
			Object: ingest.ObjectRequest{Key: "k", Requested: "AES256"}}
		return eval(t, e, ev)
	}
	put("o-1", now)
	put("o-future", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)) // joins the window, counts at now+15m
	now = t0.Add(20 * time.Minute)
	got := put("o-2", now)
	if !slices.Contains(got, ObjectEncryptionOverride) {
		t.Errorf("the window of o-1 did not close when event time passed it: %v", got)
	}
	// A read burst right after the future-dated record is still a burst.
	var fired int
	for i := range 25 {
		ev := &ingest.Event{ID: fmt.Sprint("get-", i), Name: ingest.GetBucketEncryption, Source: ingest.SourceS3, Time: now.Add(time.Duration(i) * time.Second),
			Region: "us-east-1", Account: acct, Bucket: ingest.NewBucket(fmt.Sprint("b-", i), acct, "us-east-1"),
			Actor: ingest.Actor{Type: "IAMUser", ARN: "arn:aws:iam::" + acct + ":user/scanner", AccountID: acct}}
		if slices.Contains(eval(t, e, ev), EncryptionReadBurst) {
			fired++
		}
	}
	if fired != 1 {
		t.Errorf("read burst fired %d times, want 1", fired)
	}
}
