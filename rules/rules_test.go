package rules

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/ingest"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"logs-*", "logs-2026", true},
		{"logs-*", "xlogs-2026", false},
		{"*", "", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"arn:aws:iam::*:role/ci/*", "arn:aws:iam::111122223333:role/ci/terraform", true},
		{"arn:aws:iam::*:role/*", "arn:aws:iam::1:role/a/b/c", true}, // * crosses / and :
		{"*--x-s3", "a--usw2-az1--x-s3", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"ABC", "abc", false},
	}
	for _, tt := range tests {
		if got := Glob(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestKeyAllowed(t *testing.T) {
	const id = "1234abcd-12ab-34cd-56ef-1234567890ab"
	const arn = "arn:aws:kms:us-east-1:111122223333:key/" + id
	tests := []struct {
		entry, key string
		want       bool
	}{
		{arn, arn, true},
		{arn, id, true}, // key ID allowed by an entry ARN ending in :key/<id>
		{id, arn, true}, // key ARN allowed by an entry equal to its key ID
		{id, id, true},
		{"arn:aws:kms:*:111122223333:key/*", arn, true},
		{"arn:aws:kms:*:444455556666:key/*", arn, false},
		{arn, "other-id", false},
		{"alias/finance", "alias/finance", true},
		{"arn:aws:kms:us-east-1:111122223333:key/alias/x", "alias/x", false}, // an alias is not a key ID
	}
	for _, tt := range tests {
		if got := keyAllowed(tt.entry, tt.key); got != tt.want {
			t.Errorf("keyAllowed(%q, %q) = %v, want %v", tt.entry, tt.key, got, tt.want)
		}
	}
}

func TestAliases(t *testing.T) {
	for key, want := range map[string][2]bool{
		"alias/aws/s3":                         {true, true},
		"arn:aws:kms:us-east-1:1:alias/aws/s3": {true, true},
		"alias/mine":                           {true, false},
		"arn:aws:kms:us-east-1:1:key/abc":      {false, false},
		"abc":                                  {false, false},
	} {
		if IsAlias(key) != want[0] || IsManagedAlias(key) != want[1] {
			t.Errorf("%s: alias %v managed %v, want %v", key, IsAlias(key), IsManagedAlias(key), want)
		}
	}
	if KeyRegion("arn:aws:kms:eu-west-1:1:key/abc") != "eu-west-1" || KeyAccount("arn:aws:kms:eu-west-1:1:key/abc") != "1" || KeyRegion("abc") != "" {
		t.Error("KeyRegion/KeyAccount")
	}
}

func TestPolicyValidate(t *testing.T) {
	p := DefaultPolicy()
	if errs := p.Validate(); len(errs) != 0 {
		t.Fatalf("default policy invalid: %v", errs)
	}
	p.DirectoryBuckets.AllowedAlgorithms = []string{"aws:kms", "AES-256"}
	p.Buckets = []BucketOverride{{Match: ""}}
	p.Severity = map[string]Severity{"no-such-rule": High}
	p.Disabled = []string{"root-principal", "typo"}
	p.ReadBurst.Buckets = 0
	want := []string{
		"directoryBuckets.allowedAlgorithms[1]", "buckets[0].match", "buckets[0].allowedAlgorithms",
		"readBurst.buckets", "severity.no-such-rule", "disabled[1]",
	}
	errs := p.Validate()
	got := map[string]bool{}
	for _, e := range errs {
		got[e.Path] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no error at %s; got %v", w, errs)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d errors, want %d: %v", len(errs), len(want), errs)
	}
}

func TestReadBurstWindow(t *testing.T) {
	var r Reads
	const threshold, window = 3, 10 * time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		bucket string
		at     time.Duration
		fire   bool
	}{
		{"a", 0, false},
		{"b", time.Minute, false},
		{"a", 2 * time.Minute, false}, // same bucket again: still 2 distinct
		{"c", 3 * time.Minute, true},  // third distinct: burst
		{"d", 4 * time.Minute, false}, // same burst
		{"e", 30 * time.Minute, false},
		{"f", 31 * time.Minute, false},
		{"g", 32 * time.Minute, true},  // the window moved on: a new burst
		{"h", 20 * time.Minute, false}, // late event inside the burst
	}
	for i, s := range steps {
		fire, _ := r.observe(s.bucket, t0.Add(s.at), window, threshold)
		if fire != s.fire {
			t.Errorf("step %d (%s at %s): fire %v, want %v", i, s.bucket, s.at, fire, s.fire)
		}
	}
	// Memory stays bounded for a caller reading many buckets.
	var scanner Reads
	for i := range 10000 {
		scanner.observe(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond), window, threshold)
	}
	if n := len(scanner.Seen); n > readsCap(threshold) {
		t.Errorf("caller holds %d buckets, cap %d", n, readsCap(threshold))
	}
}

func TestDirectoryKeyStateSurvivesInState(t *testing.T) {
	st := NewMemory()
	put := func(id, key string) []Finding {
		e, err := New(DefaultPolicy(), st) // a new engine each time, as after a restart
		if err != nil {
			t.Fatal(err)
		}
		ev := &ingest.Event{ID: id, Name: ingest.PutBucketEncryption, Source: ingest.SourceS3Express, Region: "us-west-2", Account: "1",
			Bucket:     ingest.Bucket{Name: "b--usw2-az1--x-s3", Type: ingest.BucketDirectory, Account: "1", Region: "us-west-2"},
			Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: AlgKMS, KMSKeyID: key, BucketKeyEnabled: true}}}}
		fs, err := e.Evaluate(ev)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	if fs := put("1", "arn:aws:kms:us-west-2:1:key/k1"); len(fs) != 0 {
		t.Fatalf("first key: %v", fs)
	}
	if fs := put("2", "k2"); len(fs) != 1 || fs[0].Rule != DirectoryKMSKeyChanged {
		t.Fatalf("second key: %v", fs)
	}
	if fs := put("3", "k1"); len(fs) != 0 {
		t.Fatalf("first key again, by ID: %v", fs)
	}
	s, ok, _ := st.Bucket("1/us-west-2/b--usw2-az1--x-s3")
	if !ok || s.LifetimeKey != "k1" || s.KMSKeyID != "k1" || !s.Compliant {
		t.Errorf("state %+v", s)
	}
}

// TestKeyChangedSurvivesRestartInBolt: the key a directory bucket was set
// to is kept in the bbolt state, so a new engine (a restarted daemon) still
// sees a later key change.
func TestKeyChangedSurvivesRestartInBolt(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	put := func(id, key string) (fs []Finding) {
		e, _ := New(DefaultPolicy(), nil) // a fresh engine each time
		ev := &ingest.Event{ID: id, Name: ingest.PutBucketEncryption, Source: ingest.SourceS3Express, Region: "us-west-2", Account: "1",
			Bucket:     ingest.Bucket{Name: "b--usw2-az1--x-s3", Type: ingest.BucketDirectory, Account: "1", Region: "us-west-2"},
			Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: AlgKMS, KMSKeyID: key, BucketKeyEnabled: true}}}}
		if err := db.Update(func(tx *bolt.Tx) error {
			var err error
			fs, err = e.EvaluateIn(TxState{Tx: tx}, ev)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	if fs := put("1", "k1"); len(fs) != 0 {
		t.Fatalf("first key: %v", fs)
	}
	if fs := put("2", "k2"); len(fs) != 1 || fs[0].Rule != DirectoryKMSKeyChanged {
		t.Fatalf("after a restart, a new key: %v", fs)
	}
	var n int
	db.View(func(tx *bolt.Tx) error {
		return ForEachBucket(tx, func(_ string, st BucketState) error {
			n++
			if st.LifetimeKey != "k1" || st.LifetimeKeyEventID != "1" {
				t.Errorf("state %+v", st)
			}
			return nil
		})
	})
	if n != 1 {
		t.Errorf("%d buckets stored", n)
	}
}

// TestGroupsRoundTripInBolt: an open data-event window stored in bbolt
// reads back whole, severity included.
func TestGroupsRoundTripInBolt(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g := Group{Key: "k", Rule: ObjectEncryptionOverride, Severity: Medium, Setting: "AES256", Start: time.Unix(100, 0).UTC(), Count: 3,
		First: &ingest.Event{ID: "e1", Name: ingest.PutObject, Bucket: ingest.Bucket{Name: "b"}}}
	if err := db.Update(func(tx *bolt.Tx) error { return TxState{Tx: tx}.PutGroup(g) }); err != nil {
		t.Fatal(err)
	}
	var back Group
	err = db.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		back, ok, err = TxState{Tx: tx}.Group("k")
		if !ok && err == nil {
			t.Error("group not found")
		}
		return err
	})
	if err != nil || back.Severity != Medium || back.Count != 3 || back.First == nil || back.First.ID != "e1" || !back.Start.Equal(g.Start) {
		t.Errorf("read back %+v, %v", back, err)
	}
}
