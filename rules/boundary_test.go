package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/ingest"
)

func dsseRootPut(id string) *ingest.Event {
	return &ingest.Event{ID: id, Name: ingest.PutBucketEncryption, Source: ingest.SourceS3, Region: "us-east-1", Account: "1",
		Actor:      ingest.Actor{Type: "Root", ARN: "arn:aws:iam::1:root"},
		Bucket:     ingest.Bucket{Name: "b", Type: ingest.BucketGeneralPurpose, Account: "1"},
		Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "AES256"}}}}
}

// TestRuleFailureIsContained: a built-in rule that panics on an event is
// reported with the event and its stack, and the event's other rules still
// raise their findings; the bucket state is still recorded.
func TestRuleFailureIsContained(t *testing.T) {
	i := slices.IndexFunc(putChecks, func(c check) bool { return c.rule == AlgorithmNotAllowed })
	saved := putChecks[i]
	putChecks[i].fn = func(x *evaluation) {
		var s []int
		_ = s[len(x.findings)-1] // the bug issue 13 found, on purpose
	}
	t.Cleanup(func() { putChecks[i] = saved })

	st := NewMemory()
	e, err := New(DefaultPolicy(), st)
	if err != nil {
		t.Fatal(err)
	}
	var failed []*RuleError
	e.OnRuleError(func(re *RuleError) { failed = append(failed, re) })
	fs, err := e.Evaluate(dsseRootPut("ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Rule)
	}
	if !slices.Equal(got, []string{RootPrincipal}) {
		t.Errorf("findings %v, want the other rule's [%s]", got, RootPrincipal)
	}
	if len(failed) != 1 || failed[0].Rule != AlgorithmNotAllowed || failed[0].Event.ID != "ev-1" ||
		!errors.Is(failed[0].Err, ErrPanic) || len(failed[0].Stack) == 0 {
		t.Fatalf("rule errors %+v", failed)
	}
	if _, ok, _ := st.Bucket(StateKey(dsseRootPut("").Bucket)); !ok {
		t.Error("the bucket state was not recorded after the failing rule")
	}
}

// burstEvents are reads of n distinct buckets by one caller, 5 s apart,
// and a Put and a Delete on a directory bucket that change its key.
func burstEvents(n int) []*ingest.Event {
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var evs []*ingest.Event
	for i := range n {
		evs = append(evs, &ingest.Event{ID: fmt.Sprintf("get-%d", i), Name: ingest.GetBucketEncryption, Source: ingest.SourceS3, Account: "1",
			Time: t0.Add(time.Duration(i) * 5 * time.Second), Actor: ingest.Actor{ARN: "arn:aws:sts::1:assumed-role/AWSServiceRoleForConfig/x"},
			Bucket: ingest.Bucket{Name: fmt.Sprintf("b-%02d", i), Type: ingest.BucketGeneralPurpose, Account: "1"}})
	}
	dir := ingest.Bucket{Name: "d--usw2-az1--x-s3", Type: ingest.BucketDirectory, Account: "1", Region: "us-west-2"}
	for i, key := range []string{"k1", "k2"} {
		evs = append(evs, &ingest.Event{ID: "put-" + key, Name: ingest.PutBucketEncryption, Source: ingest.SourceS3Express, Account: "1", Region: "us-west-2",
			Time: t0.Add(time.Duration(n+i) * 5 * time.Second), Bucket: dir,
			Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: AlgKMS, KMSKeyID: key, BucketKeyEnabled: true}}}})
	}
	return evs
}

// TestEachStatefulRuleDisabled: disabling any stateful rule (the burst of
// reads of issue 13 among them) raises no error and removes exactly that
// rule's findings.
func TestEachStatefulRuleDisabled(t *testing.T) {
	evs := burstEvents(21)
	judgeWith := func(p Policy) map[string]int {
		e, err := New(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.OnRuleError(func(re *RuleError) { t.Errorf("rule %s failed: %v", re.Rule, re.Err) })
		got := map[string]int{}
		for _, ev := range evs {
			fs, err := e.Evaluate(ev)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				got[f.Rule]++
			}
		}
		return got
	}
	all := judgeWith(DefaultPolicy())
	if all[EncryptionReadBurst] != 1 || all[DirectoryKMSKeyChanged] != 1 {
		t.Fatalf("with every rule on: %v", all)
	}
	for _, d := range Catalogue {
		if !d.Stateful {
			continue
		}
		t.Run(d.ID, func(t *testing.T) {
			p := DefaultPolicy()
			p.Disabled = []string{d.ID}
			want := map[string]int{}
			for r, n := range all {
				if r != d.ID {
					want[r] = n
				}
			}
			if got := judgeWith(p); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("findings %v, want %v", got, want)
			}
		})
	}
}

// TestReadWindowsSurviveRestartInBolt: a caller's reads are stored with
// the bucket state, so a burst that straddles a restart still fires, once.
func TestReadWindowsSurviveRestartInBolt(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	evs := burstEvents(25)[:25]
	fired := 0
	for _, part := range [][]*ingest.Event{evs[:12], evs[12:]} {
		e, err := New(DefaultPolicy(), nil) // a new engine, as after a restart
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			for _, ev := range part {
				fs, err := e.EvaluateIn(TxState{Tx: tx}, ev)
				if err != nil {
					return err
				}
				for _, f := range fs {
					if f.Rule == EncryptionReadBurst {
						fired++
						if f.Count != 20 {
							t.Errorf("burst count %d, want 20", f.Count)
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if fired != 1 {
		t.Errorf("read burst fired %d times across the restart, want 1", fired)
	}
}
