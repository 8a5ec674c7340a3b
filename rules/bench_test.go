package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// BenchmarkEvaluate judges a mix of Put, Get and Delete events on both
// bucket types, with the bucket state in memory.
func BenchmarkEvaluate(b *testing.B) {
	e, err := New(DefaultPolicy(), NewMemory())
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*ingest.Event
	for i := range 1024 {
		dir := i%2 == 0
		bk := ingest.Bucket{Name: fmt.Sprintf("b%d", i%64), Type: ingest.BucketGeneralPurpose, Account: "1", Region: "us-east-1"}
		src := ingest.SourceS3
		if dir {
			bk.Name += "--use1-az4--x-s3"
			bk.Type, src = ingest.BucketDirectory, ingest.SourceS3Express
		}
		ev := &ingest.Event{ID: fmt.Sprint(i), Source: src, Region: "us-east-1", Account: "1", Bucket: bk, Time: t0.Add(time.Duration(i) * time.Second),
			Actor: ingest.Actor{Type: "AssumedRole", ARN: fmt.Sprintf("arn:aws:sts::1:assumed-role/r/s%d", i%16)}}
		switch i % 4 {
		case 0, 1:
			ev.Name = ingest.PutBucketEncryption
			ev.Encryption = ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: AlgKMS, KMSKeyID: fmt.Sprintf("arn:aws:kms:us-east-1:1:key/k%d", i%3), BucketKeyEnabled: i%3 == 0}}}
		case 2:
			ev.Name = ingest.GetBucketEncryption
		case 3:
			ev.Name = ingest.DeleteBucketEncryption
		}
		evs = append(evs, ev)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := e.Evaluate(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
