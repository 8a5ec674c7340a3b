package inventory_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/inventory"
)

// BenchmarkScan10k scans 10,000 general purpose buckets of one account
// (one key in 1 of 100) at rate 50 through the real SDK and the emulators,
// and reports the wall time against the rate-bound minimum, calls / rate.
// It takes about 200 s an iteration:
//
//	go test -run '^$' -bench Scan10k -benchtime 1x -count 3 ./ingest/inventory/
func BenchmarkScan10k(b *testing.B) {
	w := awsemu.NewWorld()
	srv := httptest.NewServer(w)
	defer srv.Close()
	testkit.AWSEnv(b, srv.URL)
	const acct, n, rate = "111122223333", 10000, 50
	w.KMS.AddKey(awsemu.Key{ID: "k1", Account: acct, Region: "us-east-1"})
	on := true
	for i := range n {
		rules := []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"SSE-C"}}}
		if i%100 == 0 {
			rules = []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "k1", BucketKey: &on}}
		}
		w.S3.AddBucket(awsemu.Bucket{Name: fmt.Sprintf("b-%05d", i), Account: acct, Region: "us-east-1", Rules: rules})
	}
	a, err := inventory.NewAccount(context.Background(), "", "")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		before := len(w.S3.InventoryCalls(acct)) + len(w.KMS.Calls(acct))
		s := inventory.New(inventory.Options{Accounts: []*inventory.Account{a}, Regions: []string{"us-east-1"}, Rate: rate})
		start := time.Now()
		res := s.ScanTarget(context.Background(), a, "us-east-1", func(*ingest.Event) error { return nil })
		wall := time.Since(start)
		if res.Err != nil || res.Read != n {
			b.Fatalf("result %+v", res)
		}
		calls := len(w.S3.InventoryCalls(acct)) + len(w.KMS.Calls(acct)) - before
		minimum := time.Duration(float64(calls) / rate * float64(time.Second))
		b.ReportMetric(float64(calls), "calls")
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(minimum.Seconds(), "min-s")
		b.ReportMetric(wall.Seconds()/minimum.Seconds(), "wall/min")
	}
}
