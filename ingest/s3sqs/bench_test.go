package s3sqs_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest/s3sqs"
)

// BenchmarkMessages drains 500 notifications (one small trail file each)
// with one worker through the real SDK and the emulators (10 ms per
// answer), and reports messages per second and SQS calls per message:
//
//	go test -run '^$' -bench Messages -benchtime 1x -count 5 ./ingest/s3sqs/
func BenchmarkMessages(b *testing.B) {
	rec, _ := os.ReadFile("../../fixtures/records/gp-delete.json")
	for b.Loop() {
		q, store := awsemu.NewSQS(), awsemu.NewS3()
		qs, ss := httptest.NewServer(q), httptest.NewServer(store)
		testkit.AWSEnv(b, qs.URL)
		b.Setenv("AWS_ENDPOINT_URL_S3", ss.URL)
		const n = 500
		for i := range n {
			key := fmt.Sprintf("AWSLogs/1/CloudTrail/us-east-1/2026/03/01/f%04d.json.gz", i)
			store.Put("trail", key, gz(rec))
			q.Send(`{"s3Bucket":"trail","s3ObjectKey":["` + key + `"]}`)
		}
		sq, s3c, err := s3sqs.NewClients(context.Background(), "http://queue")
		if err != nil {
			b.Fatal(err)
		}
		c := &collector{ids: map[string]int{}}
		src, _ := s3sqs.New(s3sqs.Options{QueueURL: qs.URL + "/111122223333/trail-logs", SQS: sq, S3: s3c, Workers: 1, WaitTime: time.Second,
			Visibility: 30 * time.Second, Logger: zerolog.Nop()})
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		done := make(chan struct{})
		go func() { src.Run(ctx, c.handle); close(done) }()
		for {
			if _, deleted, _ := q.Counts(); deleted == n {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		cancel()
		<-done
		calls := 0
		for _, v := range q.Calls() {
			calls += v
		}
		b.ReportMetric(n/took.Seconds(), "msgs/s")
		b.ReportMetric(float64(calls)/n, "sqs-calls/msg")
		qs.Close()
		ss.Close()
	}
}
