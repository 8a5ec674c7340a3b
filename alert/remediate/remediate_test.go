package remediate_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/remediate"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

const acct = "111122223333"

var (
	on      = true
	keyARN  = "arn:aws:kms:us-east-1:" + acct + ":key/k1"
	blocked = []string{"SSE-C"}
)

// env is the emulated S3, the engine that makes real findings and state,
// and the sink under test.
type env struct {
	t      *testing.T
	w      *awsemu.World
	engine *rules.Engine
	state  *rules.Memory
	mu     sync.Mutex
	out    []alert.Alert
	sink   *remediate.Sink
	at     time.Time
	n      int
}

func newEnv(t *testing.T, dryRun bool) *env {
	t.Helper()
	w := awsemu.NewWorld()
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	testkit.AWSEnv(t, srv.URL)
	st := rules.NewMemory()
	e, err := rules.New(rules.DefaultPolicy(), st)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle, o.Retryer = true, aws.NopRetryer{} })
	v := &env{t: t, w: w, engine: e, state: st, at: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	v.sink = remediate.New(remediate.Options{DryRun: dryRun, Rate: 50, RoleName: "encwatch-remediate",
		Client: func(context.Context, string, string) (remediate.S3API, error) { return c, nil },
		State:  st.Bucket,
		Emit: func(_ context.Context, a alert.Alert) error {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.out = append(v.out, a)
			return nil
		}})
	return v
}

// put judges a PutBucketEncryption by caller (an assumed role's name) and
// returns its alerts.
func (v *env) event(name, bucket, role string, rs ...ingest.EncryptionRule) []alert.Alert {
	v.t.Helper()
	v.n++
	v.at = v.at.Add(time.Minute)
	b := ingest.NewBucket(bucket, acct, "us-east-1")
	src := ingest.SourceS3
	if b.Type == ingest.BucketDirectory {
		src = ingest.SourceS3Express
	}
	ev := &ingest.Event{ID: fmt.Sprintf("ev-%d", v.n), Name: name, Source: src, Time: v.at, TimeRaw: v.at.Format(time.RFC3339), Region: "us-east-1",
		Account: acct, Bucket: b, Actor: ingest.Actor{Type: "AssumedRole", ARN: "arn:aws:sts::" + acct + ":assumed-role/" + role + "/s", AccountID: acct,
			IssuerARN: "arn:aws:iam::" + acct + ":role/" + role},
		Encryption: ingest.Encryption{Present: len(rs) > 0, Rules: rs}}
	fs, err := v.engine.Evaluate(ev)
	if err != nil {
		v.t.Fatal(err)
	}
	var out []alert.Alert
	for _, f := range fs {
		out = append(out, alert.New(f, v.at))
	}
	return out
}

func (v *env) find(as []alert.Alert, rule string) alert.Alert {
	v.t.Helper()
	for _, a := range as {
		if a.Rule == rule {
			return a
		}
	}
	v.t.Fatalf("no %s among %v", rule, as)
	return alert.Alert{}
}

// send hands a finding to the sink and returns the sink's one alert.
func (v *env) send(a alert.Alert) alert.Alert {
	v.t.Helper()
	v.mu.Lock()
	before := len(v.out)
	v.mu.Unlock()
	if err := v.sink.Send(context.Background(), alert.Delivery{Alert: a}); err != nil {
		v.t.Fatalf("Send: %v", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.out) != before+1 {
		v.t.Fatalf("%d alerts from the sink, want 1", len(v.out)-before)
	}
	return v.out[len(v.out)-1]
}

var compliant = ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKeyEnabled: true, BucketKeySet: true, BlockedEncryptionTypes: blocked}

func (v *env) bucket(name string, rs ...awsemu.Rule) {
	v.w.S3.AddBucket(awsemu.Bucket{Name: name, Account: acct, Region: "us-east-1", Rules: rs})
}

func TestRestores(t *testing.T) {
	v := newEnv(t, false)
	tests := []struct {
		name    string
		now     awsemu.Rule           // what the bucket has after the bad change
		change  ingest.EncryptionRule // the bad change as the trail saw it (empty: a Delete)
		finding string
		want    awsemu.Rule
	}{
		{"deleted", awsemu.Rule{Algorithm: "AES256", Blocked: blocked}, ingest.EncryptionRule{}, rules.EncryptionDeleted,
			awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: blocked}},
		{"managed-key", awsemu.Rule{Algorithm: "aws:kms", BucketKey: &on, Blocked: blocked},
			ingest.EncryptionRule{Algorithm: "aws:kms", BucketKeyEnabled: true, BucketKeySet: true, BlockedEncryptionTypes: blocked}, rules.KMSAWSManagedKey,
			awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: blocked}},
		{"sse-c", awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: []string{"NONE"}},
			ingest.EncryptionRule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKeyEnabled: true, BucketKeySet: true, BlockedEncryptionTypes: []string{"NONE"}}, rules.SSECUnblocked,
			awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: blocked}},
		// The algorithm is fixed; BlockedEncryptionTypes and the Bucket Key stay.
		{"algorithm", awsemu.Rule{Algorithm: "AES256", BucketKey: &on, Blocked: blocked},
			ingest.EncryptionRule{Algorithm: "AES256", BucketKeyEnabled: true, BucketKeySet: true, BlockedEncryptionTypes: blocked}, rules.AlgorithmNotAllowed,
			awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: blocked}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "b-" + tt.name
			v.event(ingest.PutBucketEncryption, name, "admin", compliant)
			v.bucket(name, tt.now)
			var as []alert.Alert
			if tt.change.Algorithm == "" {
				as = v.event(ingest.DeleteBucketEncryption, name, "intruder")
			} else {
				as = v.event(ingest.PutBucketEncryption, name, "intruder", tt.change)
			}
			got := v.send(v.find(as, tt.finding))
			if got.Rule != remediate.Applied || got.Action == nil || got.Action.Changed == nil || !*got.Action.Changed {
				t.Fatalf("sink alert %+v", got)
			}
			puts := v.w.S3.Puts()
			last := puts[len(puts)-1]
			if last.Bucket != name || len(last.Rules) != 1 || !sameRule(last.Rules[0], tt.want) {
				t.Errorf("wrote %+v, want %+v", last.Rules, tt.want)
			}
		})
	}
}

func sameRule(a, b awsemu.Rule) bool {
	bk := func(p *bool) bool { return p != nil && *p }
	return a.Algorithm == b.Algorithm && a.KMSKeyID == b.KMSKeyID && bk(a.BucketKey) == bk(b.BucketKey) && slices.Equal(a.Blocked, b.Blocked)
}

func TestSkips(t *testing.T) {
	v := newEnv(t, false)
	// No compliant configuration ever known.
	v.bucket("never-good", awsemu.Rule{Algorithm: "AES256", Blocked: blocked})
	got := v.send(v.find(v.event(ingest.DeleteBucketEncryption, "never-good", "intruder"), rules.EncryptionDeleted))
	if got.Rule != remediate.Skipped || got.Action.Reason == "" {
		t.Errorf("no known compliant configuration: %+v", got)
	}
	// A directory bucket: never touched, not even read.
	calls := len(v.w.S3.InventoryCalls(acct))
	dir := "fast--use1-az4--x-s3"
	as := v.event(ingest.PutBucketEncryption, dir, "intruder", ingest.EncryptionRule{Algorithm: "aws:kms"})
	got = v.send(v.find(as, rules.KMSAWSManagedKey))
	if got.Rule != remediate.Skipped || len(v.w.S3.InventoryCalls(acct)) != calls {
		t.Errorf("directory bucket: %+v, %d calls", got, len(v.w.S3.InventoryCalls(acct))-calls)
	}
	// The write is denied: skipped, with the error.
	v.event(ingest.PutBucketEncryption, "denied", "admin", compliant)
	v.bucket("denied", awsemu.Rule{Algorithm: "AES256", Blocked: blocked})
	v.w.S3.DenyPut("denied", true)
	got = v.send(v.find(v.event(ingest.DeleteBucketEncryption, "denied", "intruder"), rules.EncryptionDeleted))
	if got.Rule != remediate.Skipped || got.Action.Error != "AccessDenied" {
		t.Errorf("denied: %+v", got.Action)
	}
	// A finding the bucket's newer event superseded.
	v.event(ingest.PutBucketEncryption, "moved-on", "admin", compliant)
	v.bucket("moved-on", awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: keyARN, BucketKey: &on, Blocked: blocked})
	old := v.find(v.event(ingest.DeleteBucketEncryption, "moved-on", "intruder"), rules.EncryptionDeleted)
	v.event(ingest.PutBucketEncryption, "moved-on", "admin", compliant)
	got = v.send(old)
	if got.Rule != remediate.Skipped || got.Action.Reason == "" {
		t.Errorf("superseded: %+v", got)
	}
	if n := len(v.w.S3.Puts()); n != 0 {
		t.Errorf("%d writes, want none", n)
	}
	// SlowDown is retried by the outbox: Send returns an error, no alert.
	v.event(ingest.PutBucketEncryption, "slow", "admin", compliant)
	v.bucket("slow", awsemu.Rule{Algorithm: "AES256", Blocked: blocked})
	f := v.find(v.event(ingest.DeleteBucketEncryption, "slow", "intruder"), rules.EncryptionDeleted)
	v.w.S3.SlowDownNext(1)
	if err := v.sink.Send(context.Background(), alert.Delivery{Alert: f}); err == nil {
		t.Error("SlowDown: no error to retry")
	}
	if got := v.send(f); got.Rule != remediate.Applied {
		t.Errorf("after the SlowDown: %+v", got)
	}
}

// TestOwnChangeAndDryRun: the sink's own Put coming back through the trail
// is never answered; a dry run reads, says what it would write, and
// writes nothing.
func TestOwnChangeAndDryRun(t *testing.T) {
	v := newEnv(t, false)
	v.event(ingest.PutBucketEncryption, "mine", "admin", compliant)
	v.bucket("mine", awsemu.Rule{Algorithm: "AES256", Blocked: blocked})
	// The sink's own Put, had it set something another rule dislikes.
	as := v.event(ingest.PutBucketEncryption, "mine", "encwatch-remediate", ingest.EncryptionRule{Algorithm: "AES256", BlockedEncryptionTypes: blocked})
	if err := v.sink.Send(context.Background(), alert.Delivery{Alert: v.find(as, rules.AlgorithmNotAllowed)}); err != nil {
		t.Fatal(err)
	}
	if len(v.out) != 0 || len(v.w.S3.Puts()) != 0 {
		t.Errorf("own change answered: %d alerts, %d writes", len(v.out), len(v.w.S3.Puts()))
	}

	d := newEnv(t, true)
	d.event(ingest.PutBucketEncryption, "dry", "admin", compliant)
	d.bucket("dry", awsemu.Rule{Algorithm: "AES256", Blocked: blocked})
	got := d.send(d.find(d.event(ingest.DeleteBucketEncryption, "dry", "intruder"), rules.EncryptionDeleted))
	if got.Rule != remediate.Applied || !got.Action.DryRun || len(got.Action.Written) != 1 || got.Action.Written[0].KMSKeyID != keyARN {
		t.Errorf("dry run alert %+v", got.Action)
	}
	if len(d.w.S3.Puts()) != 0 || d.w.S3.Rules("dry")[0].Algorithm != "AES256" {
		t.Error("the dry run wrote")
	}
}
