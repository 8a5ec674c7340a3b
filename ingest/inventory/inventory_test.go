package inventory_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/inventory"
)

var (
	on  = true
	off = false
)

// world starts the emulators and points the SDK at them.
func world(t *testing.T) *awsemu.World {
	t.Helper()
	w := awsemu.NewWorld()
	w.CloudTrail.Delay = 0
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	testkit.AWSEnv(t, srv.URL)
	return w
}

func account(t *testing.T, role string) *inventory.Account {
	t.Helper()
	a, err := inventory.NewAccount(context.Background(), role, "")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// collect gathers emitted events by bucket name; the completion markers
// under "complete:<account>/<region>".
type collect struct {
	mu  sync.Mutex
	evs map[string]*ingest.Event
	n   int
}

func (c *collect) emit(ev *ingest.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.evs == nil {
		c.evs = map[string]*ingest.Event{}
	}
	c.n++
	k := ev.Bucket.Name
	if ev.Inventory.Complete {
		k = "complete:" + ev.Bucket.Account + "/" + ev.Bucket.Region
	}
	if _, dup := c.evs[k]; dup {
		return fmt.Errorf("%s emitted twice", k)
	}
	c.evs[k] = ev
	return nil
}

// TestTwoAccountsTwoRegions scans two accounts by assumed role in two
// Regions: each account's buckets of each type, each Region's own, with
// their configuration and the key KMS resolved.
func TestTwoAccountsTwoRegions(t *testing.T) {
	w := world(t)
	const a1, a2 = "111111111111", "222222222222"
	w.KMS.AddKey(awsemu.Key{ID: "k-east", Account: a1, Region: "us-east-1", Aliases: []string{"alias/data"}})
	w.KMS.AddKey(awsemu.Key{ID: "k-dir", Account: a2, Region: "us-west-2", State: "Disabled"})
	w.KMS.AddKey(awsemu.Key{ID: "aws-s3", Account: a1, Region: "us-west-2", Manager: "AWS", Aliases: []string{"alias/aws/s3"}})
	buckets := []awsemu.Bucket{
		{Name: "a1-east", Account: a1, Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "alias/data", BucketKey: &on, Blocked: []string{"SSE-C"}}}},
		{Name: "a1-west", Account: a1, Region: "us-west-2", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "alias/aws/s3"}}},
		{Name: "a1-none", Account: a1, Region: "us-west-2"},
		{Name: "a2-east", Account: a2, Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"NONE"}}}},
		{Name: "fast--usw2-az1--x-s3", Account: a2, Region: "us-west-2", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-west-2:" + a2 + ":key/k-dir", BucketKey: &on}}},
		{Name: "other--use1-az4--x-s3", Account: a1, Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256"}}},
	}
	for _, b := range buckets {
		w.S3.AddBucket(b)
	}
	s := inventory.New(inventory.Options{Accounts: []*inventory.Account{account(t, "arn:aws:iam::"+a1+":role/reader"), account(t, "arn:aws:iam::"+a2+":role/reader")},
		Regions: []string{"us-east-1", "us-west-2"}, Rate: 200})
	var c collect
	res := s.Scan(context.Background(), c.emit)
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("%s/%s: %v", r.Account, r.Region, r.Err)
		}
		if c.evs["complete:"+r.Account+"/"+r.Region] == nil {
			t.Errorf("%s/%s: no completion marker", r.Account, r.Region)
		}
	}
	if got := c.n; got != len(buckets)+4 {
		t.Fatalf("%d events, want %d buckets and 4 markers", got, len(buckets))
	}
	east := c.evs["a1-east"]
	if east.Bucket.Account != a1 || east.Bucket.Region != "us-east-1" || east.Bucket.Type != ingest.BucketGeneralPurpose || east.Source != ingest.SourceS3 {
		t.Errorf("a1-east bucket = %+v from %s", east.Bucket, east.Source)
	}
	r := east.Encryption.Rules[0]
	if r.Algorithm != "aws:kms" || r.KMSKeyID != "alias/data" || !r.BucketKeyEnabled || !east.Encryption.BlocksSSEC() {
		t.Errorf("a1-east configuration = %+v", east.Encryption)
	}
	if k := east.Inventory.Key; k.ARN != "arn:aws:kms:us-east-1:"+a1+":key/k-east" || k.Manager != "CUSTOMER" || k.State != "Enabled" {
		t.Errorf("a1-east key = %+v, want the alias resolved", k)
	}
	if k := c.evs["a1-west"].Inventory.Key; k.Manager != "AWS" {
		t.Errorf("a1-west key = %+v, want AWS managed", k)
	}
	if got := c.evs["a1-none"].Encryption.Rules[0].Algorithm; got != "AES256" {
		t.Errorf("a bucket without configuration reads as %q, want AES256 (SSE-S3)", got)
	}
	if got := c.evs["a2-east"].Encryption.Blocked(); !slices.Equal(got, []string{"NONE"}) {
		t.Errorf("a2-east blocked = %v", got)
	}
	dir := c.evs["fast--usw2-az1--x-s3"]
	if dir.Bucket.Type != ingest.BucketDirectory || dir.Bucket.Zone != "usw2-az1" || dir.Source != ingest.SourceS3Express ||
		dir.Bucket.ARN != "arn:aws:s3express:us-west-2:"+a2+":bucket/fast--usw2-az1--x-s3" || dir.Inventory.Key.State != "Disabled" {
		t.Errorf("directory bucket = %+v, key %+v", dir.Bucket, dir.Inventory.Key)
	}
	if c.evs["other--use1-az4--x-s3"] == nil {
		t.Error("the directory bucket in us-east-1 was not read")
	}
	if roles := w.CloudTrail.AssumeRoles(); roles["arn:aws:iam::"+a1+":role/reader"] == 0 || roles["arn:aws:iam::"+a2+":role/reader"] == 0 {
		t.Errorf("AssumeRole calls = %v", roles)
	}
	// The same configuration gives the same event ID, a change another.
	var again collect
	s.Scan(context.Background(), again.emit)
	if again.evs["a1-east"].ID != east.ID {
		t.Errorf("an unchanged bucket's second read has ID %s, first %s", again.evs["a1-east"].ID, east.ID)
	}
	w.S3.SetRules("a1-east", awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: "alias/data", BucketKey: &on})
	var third collect
	s.Scan(context.Background(), third.emit)
	if third.evs["a1-east"].ID == east.ID {
		t.Error("a changed configuration kept its event ID")
	}
}

// TestPagesAndHoldsTheRate scans 2,500 buckets of one account with pages
// of 1,000 at 100 calls a second: every bucket once, and at no time more
// calls in a second (S3 and KMS together) than the rate.
func TestPagesAndHoldsTheRate(t *testing.T) {
	if testing.Short() {
		t.Skip("25 s")
	}
	w := world(t)
	const acct = "111122223333"
	w.KMS.AddKey(awsemu.Key{ID: "k1", Account: acct, Region: "us-east-1"})
	for i := range 2500 {
		rules := []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"SSE-C"}}}
		if i%100 == 0 {
			rules = []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKey: &on}}
		}
		w.S3.AddBucket(awsemu.Bucket{Name: fmt.Sprintf("b-%05d", i), Account: acct, Region: "us-east-1", Rules: rules})
	}
	const rate = 100
	reg := prometheus.NewRegistry()
	s := inventory.New(inventory.Options{Accounts: []*inventory.Account{account(t, "")}, Regions: []string{"us-east-1"}, Rate: rate,
		PageSize: 1000, Metrics: inventory.NewMetrics(reg)})
	var c collect
	start := time.Now()
	res := s.Scan(context.Background(), c.emit)
	took := time.Since(start)
	if res[0].Err != nil || res[0].Read != 2500 || res[0].Listed[ingest.BucketGeneralPurpose] != 2500 {
		t.Fatalf("result = %+v", res[0])
	}
	if len(c.evs) != 2501 {
		t.Fatalf("%d events, want 2,500 buckets and a marker", len(c.evs))
	}
	calls := append(w.S3.InventoryCalls(acct), w.KMS.Calls(acct)...)
	// 3 ListBuckets pages (1,000 + 1,000 + 500), 1 ListDirectoryBuckets,
	// 2,500 reads, and one DescribeKey for the 25 buckets of key k1.
	if len(calls) != 2505 {
		t.Errorf("%d calls, want 2,505", len(calls))
	}
	if got := testkit.MetricValue(t, reg, "encwatch_inventory_calls_total", "api", "ListBuckets"); got != 3 {
		t.Errorf("ListBuckets calls = %v, want 3 pages", got)
	}
	if got := testkit.MetricValue(t, reg, "encwatch_inventory_calls_total", "api", "DescribeKey"); got != 1 {
		t.Errorf("DescribeKey calls = %v, want 1 for one distinct key", got)
	}
	if m := awsemu.MaxPerSecond(calls); m > rate {
		t.Errorf("%d calls within one second, the rate is %d", m, rate)
	}
	t.Logf("2,505 calls at rate %d in %v (rate-bound minimum %v)", rate, took.Round(time.Millisecond), time.Duration(2505*float64(time.Second)/rate))
}

// TestUnreadableBucketsAndSlowDown: AccessDenied on some buckets is
// counted and reported per bucket, never fatal; SlowDown answers are
// retried after a backoff; an account that cannot list fails alone.
func TestUnreadableBucketsAndSlowDown(t *testing.T) {
	w := world(t)
	const acct = "111122223333"
	for i := range 20 {
		w.S3.AddBucket(awsemu.Bucket{Name: fmt.Sprintf("b-%02d", i), Account: acct, Region: "us-east-1", Deny: i%5 == 0,
			Rules: []awsemu.Rule{{Algorithm: "AES256"}}})
	}
	w.S3.SlowDownNext(3)
	reg := prometheus.NewRegistry()
	s := inventory.New(inventory.Options{Accounts: []*inventory.Account{account(t, "")}, Regions: []string{"us-east-1"}, Rate: 100,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Metrics: inventory.NewMetrics(reg)})
	var c collect
	res := s.Scan(context.Background(), c.emit)[0]
	if res.Err != nil || res.Read != 16 || res.Failed != 4 || res.Denied != "" {
		t.Fatalf("result = %+v, want 16 read and 4 unreadable, no permission named as gone", res)
	}
	for _, name := range []string{"b-00", "b-05", "b-10", "b-15"} {
		if ev := c.evs[name]; ev == nil || ev.Inventory.ErrorCode != "AccessDenied" {
			t.Errorf("%s: %+v, want an AccessDenied read", name, ev)
		}
	}
	if got := testkit.MetricValue(t, reg, "encwatch_inventory_errors_total", "reason", "AccessDenied"); got != 4 {
		t.Errorf("errors{AccessDenied} = %v, want 4", got)
	}
	if got := testkit.MetricValue(t, reg, "encwatch_inventory_throttles_total", "account", acct); got != 3 {
		t.Errorf("throttles = %v, want the 3 SlowDown answers", got)
	}
	if c.evs["complete:"+acct+"/us-east-1"] == nil {
		t.Error("unreadable buckets kept the scan from completing")
	}
}

// TestFailingAccountDoesNotStopOthers: an account whose calls all fail
// ends with an error and no completion marker; the other account's scan
// completes.
func TestFailingAccountDoesNotStopOthers(t *testing.T) {
	w := world(t)
	w.S3.AddBucket(awsemu.Bucket{Name: "good", Account: "222222222222", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256"}}})
	good := account(t, "arn:aws:iam::222222222222:role/reader")
	good.S3("us-east-1") // its clients keep the emulator's endpoint
	// The broken account's calls go to a closed server.
	dead := httptest.NewServer(nil)
	dead.Close()
	t.Setenv("AWS_ENDPOINT_URL_S3", dead.URL)
	broken := account(t, "arn:aws:iam::333333333333:role/reader")
	s := inventory.New(inventory.Options{Accounts: []*inventory.Account{good, broken}, Regions: []string{"us-east-1"}, Rate: 100,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Attempts: 3})
	var c collect
	res := s.Scan(context.Background(), c.emit)
	if res[0].Err != nil || c.evs["good"] == nil || c.evs["complete:222222222222/us-east-1"] == nil {
		t.Errorf("the good account: %+v", res[0])
	}
	if res[1].Err == nil || c.evs["complete:333333333333/us-east-1"] != nil {
		t.Errorf("the broken account: %+v, want an error and no marker", res[1])
	}
}

// TestPermissionGoneIsNamed: an account whose reader role can read no
// configuration at all, and another whose buckets' keys it may not
// describe, are named with the permission for /readyz, the scan still
// completing; a bucket denied among readable ones is not such a failure.
func TestPermissionGoneIsNamed(t *testing.T) {
	w := world(t)
	for i := range 3 {
		w.S3.AddBucket(awsemu.Bucket{Name: fmt.Sprintf("denied-%d", i), Account: "222222222222", Region: "us-east-1", Deny: true,
			Rules: []awsemu.Rule{{Algorithm: "AES256"}}})
	}
	key := awsemu.Key{ID: "k-1", Account: "999999999999", Region: "us-east-1"} // another account's, not shared
	w.KMS.AddKey(key)
	w.S3.AddBucket(awsemu.Bucket{Name: "keyed", Account: "333333333333", Region: "us-east-1",
		Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: key.ARN()}}})
	src := &inventory.Source{Scanner: inventory.New(inventory.Options{Regions: []string{"us-east-1"}, Rate: 100,
		Accounts: []*inventory.Account{account(t, "arn:aws:iam::222222222222:role/reader"), account(t, "arn:aws:iam::333333333333:role/reader")}}),
		Interval: time.Hour, Checkpoints: noCheckpoints{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(context.Context, ingest.Batch) error { return nil }) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return len(src.Failing()) == 2 }, "both accounts named: %q", src.Failing())
	f := src.Failing()
	slices.Sort(f)
	if !strings.HasPrefix(f[0], "222222222222/us-east-1: s3:GetEncryptionConfiguration refused for all 3 buckets (AccessDenied)") ||
		!strings.HasPrefix(f[1], "333333333333/us-east-1: kms:DescribeKey refused for all 1 keys (AccessDeniedException)") {
		t.Errorf("Failing() = %q", f)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// noCheckpoints is a state that holds no checkpoint yet.
type noCheckpoints struct{}

func (noCheckpoints) Checkpoint(string) ([]byte, error) { return nil, nil }

// TestRevokedSessionAssumedAgain: the reader role's sessions are revoked
// between two scans; the second scan's first call is refused as expired,
// the role is assumed again and the scan reads every bucket.
func TestRevokedSessionAssumedAgain(t *testing.T) {
	w := world(t)
	const role = "arn:aws:iam::222222222222:role/reader"
	for i := range 5 {
		w.S3.AddBucket(awsemu.Bucket{Name: fmt.Sprintf("b-%d", i), Account: "222222222222", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256"}}})
	}
	s := inventory.New(inventory.Options{Accounts: []*inventory.Account{account(t, role)}, Regions: []string{"us-east-1"}, Rate: 100})
	for scan := range 2 {
		if scan == 1 {
			w.CloudTrail.RevokeSessions("222222222222")
		}
		var c collect
		if res := s.Scan(context.Background(), c.emit)[0]; res.Err != nil || res.Read != 5 || res.Failed != 0 {
			t.Fatalf("scan %d: %+v, want 5 read", scan+1, res)
		}
	}
	if n := w.CloudTrail.AssumeRoles()[role]; n != 2 {
		t.Errorf("the role was assumed %d times, want twice (again after the revocation)", n)
	}
}
