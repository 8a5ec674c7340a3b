package rules

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// eventPool decodes every fixture record (data events included) once: the
// raw material of the engine fuzzer's event sequences.
var eventPool = func() func(tb testing.TB) []*ingest.Event {
	var pool []*ingest.Event
	return func(tb testing.TB) []*ingest.Event {
		if pool != nil {
			return pool
		}
		files, err := filepath.Glob("../fixtures/records/*")
		if err != nil || len(files) == 0 {
			tb.Fatalf("no fixture records: %v", err)
		}
		for _, p := range files {
			if filepath.Ext(p) == ".md" {
				continue
			}
			in := []ingest.Input{{Path: p}}
			_, err := ingest.ReadAll(tb.Context(), in, ingest.ReadOptions{Workers: 1, DataEvents: true, OnError: func(ingest.Position, error) {}},
				func(evs []*ingest.Event) error { pool = append(pool, evs...); return nil })
			if err != nil {
				tb.Fatalf("%s: %v", p, err)
			}
		}
		return pool
	}
}()

// knobs reads fuzz bytes as a sequence of small choices.
type knobs struct{ b []byte }

func (k *knobs) next() int {
	if len(k.b) == 0 {
		return 0
	}
	v := int(k.b[0])
	k.b = k.b[1:]
	return v
}

func (k *knobs) pick(n int) int { return k.next() % n }

var (
	fuzzBuckets = []string{"tenant-00", "tenant-01", "logs-a", "data--usw2-az1--x-s3", "<b>x</b>--use1-az4--x-s3", ""}
	fuzzActors  = []string{"arn:aws:iam::111122223333:user/bob", "arn:aws:iam::111122223333:root", "arn:aws:sts::444455556666:assumed-role/ci/x", ""}
	fuzzKeys    = []string{"", "alias/aws/s3", "alias/team", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"arn:aws:kms:eu-west-1:444455556666:key/k2", "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:us-east-1:111122223333:alias/x"}
	fuzzAlgs = []string{"", "aes256", AlgAES256, AlgKMS, AlgKMSDSSE, "SSE-C", "aws:fsx"}
)

// fuzzPolicy builds a valid policy from the knobs: windows and thresholds
// down to their smallest values, allow-lists, bucket overrides.
func fuzzPolicy(k *knobs) Policy {
	p := DefaultPolicy()
	p.ReadBurst.Buckets = 1 + k.pick(25)
	p.ReadBurst.Window = Duration(time.Duration(1+k.pick(20)) * time.Minute)
	p.DataEvents.Window = Duration(time.Duration(1+k.pick(90)) * time.Minute)
	if k.pick(2) == 1 {
		p.AllowedKMSKeys = []string{fuzzKeys[1+k.pick(len(fuzzKeys)-1)], "arn:aws:kms:*:111122223333:key/*"}
	}
	if k.pick(2) == 1 {
		p.AllowedPrincipals = []string{"arn:aws:iam::111122223333:*"}
	}
	if k.pick(2) == 1 {
		p.Buckets = []BucketOverride{{Match: "logs-*", AllowedAlgorithms: []string{AlgAES256, AlgKMS}}}
	}
	if k.pick(3) == 0 {
		p.GeneralPurposeBuckets.AllowedAlgorithms = []string{AlgAES256}
	}
	return p
}

// fuzzEvents builds a short sequence from the pool, moving events onto a
// few buckets, callers and keys, minutes apart, so stateful rules meet.
func fuzzEvents(k *knobs, pool []*ingest.Event) []*ingest.Event {
	n := 1 + k.pick(40)
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var out []*ingest.Event
	for i := range n {
		ev := *pool[k.pick(len(pool))]
		ev.ID = fmt.Sprintf("e%d", i)
		ev.Digest = ev.ID
		if k.pick(2) == 1 {
			ev.Bucket.Name = fuzzBuckets[k.pick(len(fuzzBuckets))]
			ev.Bucket.Type = ingest.BucketGeneralPurpose
			if bytes.HasSuffix([]byte(ev.Bucket.Name), []byte("--x-s3")) {
				ev.Bucket.Type = ingest.BucketDirectory
			}
		}
		if k.pick(2) == 1 {
			ev.Actor.ARN = fuzzActors[k.pick(len(fuzzActors))]
			if k.pick(4) == 0 {
				ev.Actor.Type = "Root"
			}
		}
		if k.pick(3) == 0 {
			ev.ErrorCode = "AccessDenied"
		}
		if ev.Name == ingest.PutBucketEncryption && k.pick(2) == 1 {
			rs := make([]ingest.EncryptionRule, 1+k.pick(3))
			for j := range rs {
				rs[j] = ingest.EncryptionRule{Algorithm: fuzzAlgs[k.pick(len(fuzzAlgs))], KMSKeyID: fuzzKeys[k.pick(len(fuzzKeys))],
					BucketKeyEnabled: k.pick(2) == 1, BucketKeySet: k.pick(2) == 1}
			}
			ev.Encryption.Rules = rs
		}
		switch k.pick(4) {
		case 0:
			ev.Time = time.Time{} // unreadable eventTime
		default:
			ev.Time = t0.Add(time.Duration(i*k.pick(8)) * 20 * time.Second)
		}
		out = append(out, &ev)
	}
	return out
}

type fuzzFinding struct {
	Event, Rule, Summary string
	Severity             Severity
	Count                int
}

// judge runs the events through a fresh engine and closes every window,
// failing the test when a built-in rule errs or panics.
func judge(t *testing.T, p Policy, evs []*ingest.Event) []fuzzFinding {
	t.Helper()
	e, err := New(p, nil)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	e.OnRuleError(func(re *RuleError) { t.Fatalf("rule %s failed: %v\n%s", re.Rule, re.Err, re.Stack) })
	var out []fuzzFinding
	add := func(fs []Finding) {
		for _, f := range fs {
			out = append(out, fuzzFinding{Event: f.Event.ID, Rule: f.Rule, Summary: f.Summary, Severity: f.Severity, Count: f.Count})
		}
	}
	for _, ev := range evs {
		fs, err := e.Evaluate(ev)
		if err != nil {
			t.Fatalf("evaluate: %v", err)
		}
		add(fs)
	}
	fs, err := e.Flush(e.state)
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	add(fs)
	return out
}

func sortFindings(fs []fuzzFinding) []fuzzFinding {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b fuzzFinding) int {
		return cmpStrings(fmt.Sprint(a), fmt.Sprint(b))
	})
	return fs
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FuzzEngine judges short event sequences under policies built from the
// fuzz input: no rule may fail, disabling a rule must remove exactly that
// rule's findings, and a severity override must change only severities.
func FuzzEngine(f *testing.F) {
	for _, s := range []string{"", "\x00\x05\x03", "\x13\x00\x00\x01\x01\x01\x00" + string(bytes.Repeat([]byte{7, 1, 3, 1, 2, 1, 1, 5}, 12)),
		"\x02\x01\x10\x01\x00\x01\x00\x20" + string(bytes.Repeat([]byte{0x41, 1, 4, 1, 0, 0, 1, 2, 3, 1, 1, 1}, 8))} {
		f.Add([]byte(s), uint8(0), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, ruleChoice, sevChoice uint8) {
		pool := eventPool(t)
		k := &knobs{b: data}
		p := fuzzPolicy(k)
		evs := fuzzEvents(k, pool)
		base := judge(t, p, evs)

		rule := Catalogue[int(ruleChoice)%len(Catalogue)].ID
		off := p
		off.Disabled = append(slices.Clone(p.Disabled), rule)
		var want []fuzzFinding
		for _, f := range base {
			if f.Rule != rule {
				want = append(want, f)
			}
		}
		if got := judge(t, off, evs); !slices.Equal(sortFindings(got), sortFindings(want)) {
			t.Fatalf("disabling %s changed other findings:\n got %v\nwant %v", rule, sortFindings(got), sortFindings(want))
		}

		sev := Severity(1 + int(sevChoice)%int(Critical))
		over := p
		over.Severity = map[string]Severity{rule: sev}
		want = want[:0]
		for _, f := range base {
			if f.Rule == rule {
				f.Severity = sev
			}
			want = append(want, f)
		}
		if got := judge(t, over, evs); !slices.Equal(sortFindings(got), sortFindings(want)) {
			t.Fatalf("severity override %s=%s changed more than severities:\n got %v\nwant %v", rule, sev, sortFindings(got), sortFindings(want))
		}
	})
}

func TestEventPoolCoversEveryEventKind(t *testing.T) {
	seen := map[string]bool{}
	for _, ev := range eventPool(t) {
		seen[ev.Name] = true
	}
	for _, n := range []string{ingest.PutBucketEncryption, ingest.GetBucketEncryption, ingest.DeleteBucketEncryption, ingest.PutObject, ingest.CopyObject} {
		if !seen[n] {
			t.Errorf("the engine fuzzer's pool has no %s", n)
		}
	}
	if _, err := os.Stat("../fixtures/records/read-burst.jsonl"); err != nil {
		t.Fatal(err)
	}
}

// TestFuzzSequencesRaiseFindings keeps the engine fuzzer honest: the
// sequences it builds must raise many rules, or its properties hold
// vacuously.
func TestFuzzSequencesRaiseFindings(t *testing.T) {
	rulesSeen := map[string]bool{}
	for i := range 200 {
		data := make([]byte, 400)
		for j := range data {
			data[j] = byte((i*131 + j*j*7 + j) % 251)
		}
		k := &knobs{b: data}
		p := fuzzPolicy(k)
		for _, f := range judge(t, p, fuzzEvents(k, eventPool(t))) {
			rulesSeen[f.Rule] = true
		}
	}
	if len(rulesSeen) < 12 {
		t.Errorf("200 generated sequences raised only %d rules: %v", len(rulesSeen), rulesSeen)
	}
	t.Logf("rules raised: %d", len(rulesSeen))
}
