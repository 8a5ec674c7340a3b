package s3sqs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/ingest/s3sqs"
)

// FuzzParseNotification feeds arbitrary message bodies to the parser: it
// must not panic, and what it returns must name a bucket and a key that is
// not a digest or Insights object.
func FuzzParseNotification(f *testing.F) {
	files, _ := filepath.Glob(samples + "*notification*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"Type":"Notification","Message":"{\"s3Bucket\":\"b\",\"s3ObjectKey\":[\"k\"]}"}`))
	f.Add([]byte(`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a%2Fb+c"}}}]}`))
	f.Add([]byte(`{"s3Bucket":"b","s3ObjectKey":"single"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		objs, err := s3sqs.ParseNotification(body)
		if err != nil && errors.Is(err, s3sqs.ErrTestEvent) && len(objs) > 0 {
			t.Fatal("a test event returned objects")
		}
		for _, o := range objs {
			if o.Bucket == "" || strings.Contains(o.Key, "CloudTrail-Digest/") || strings.Contains(o.Key, "CloudTrail-Insight/") {
				t.Fatalf("bad object %+v", o)
			}
		}
	})
}
