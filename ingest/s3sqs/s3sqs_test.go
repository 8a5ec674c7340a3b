package s3sqs_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/s3sqs"
)

const samples = "../../../shared/data/cloudtrail-real/samples/"

func TestParseNotification(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(samples + name)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skipf("shared samples not found: %v", err)
		}
		return string(b)
	}
	single := read("awsdocs_aws-cloudtrail-user-guide__sns-notification-message_single.json")
	multiple := read("awsdocs_aws-cloudtrail-user-guide__sns-notification-message_multiple.json")
	quoted := func(s string) string {
		b := new(bytes.Buffer)
		b.WriteString(`"`)
		b.WriteString(strings.NewReplacer(`"`, `\"`, "\n", `\n`).Replace(s))
		b.WriteString(`"`)
		return b.String()
	}
	tests := []struct {
		name, body string
		want       []string // bucket/key
		err        string
	}{
		{"CloudTrail notification, one key", single, []string{"your-bucket-name/AWSLogs/123456789012/CloudTrail/us-east-2/2013/12/13/123456789012_CloudTrail_us-west-2_20131213T1920Z_LnPgDQnpkSKEsppV.json.gz"}, ""},
		{"CloudTrail notification, several keys", multiple, nil, ""},
		{"CloudTrail notification in an SNS envelope", `{"Type":"Notification","MessageId":"x","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":` + quoted(single) + `}`,
			[]string{"your-bucket-name/AWSLogs/123456789012/CloudTrail/us-east-2/2013/12/13/123456789012_CloudTrail_us-west-2_20131213T1920Z_LnPgDQnpkSKEsppV.json.gz"}, ""},
		{"S3 event with an encoded key", `{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"trail"},"object":{"key":"prefix/AWSLogs/o-abc/1/CloudTrail/us-east-1/2026/03/01/my+file%3Dname.json.gz"}}}]}`,
			[]string{"trail/prefix/AWSLogs/o-abc/1/CloudTrail/us-east-1/2026/03/01/my file=name.json.gz"}, ""},
		{"S3 event: digest skipped, removal ignored", `{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"t"},"object":{"key":"AWSLogs/1/CloudTrail-Digest/us-east-1/x.json.gz"}}},{"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"t"},"object":{"key":"AWSLogs/1/CloudTrail/us-east-1/y.json.gz"}}}]}`,
			nil, ""},
		{"S3 test event", read("awsdocs_amazon-s3-userguide__s3-event-notification_TestEvent.json"), nil, "s3:TestEvent"},
		{"unknown", `{"hello":"world"}`, nil, "unknown notification"},
		{"not JSON", `s3Bucket=x`, nil, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := s3sqs.ParseNotification([]byte(tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.Bucket+"/"+o.Key)
			}
			if tt.want != nil && strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if tt.name == "CloudTrail notification, several keys" && len(got) < 2 {
				t.Errorf("several keys: got %v", got)
			}
		})
	}
	// The S3 event samples from the AWS documentation parse.
	put := read("awsdocs_amazon-s3-userguide__s3-event-notification_ObjectCreated_Put.json")
	if objs, err := s3sqs.ParseNotification([]byte(put)); err != nil || len(objs) != 1 {
		t.Errorf("documentation S3 event: %v %v", objs, err)
	}
}

type collector struct {
	mu  sync.Mutex
	ids map[string]int
}

func (c *collector) handle(_ context.Context, b ingest.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range b.Events {
		c.ids[e.ID]++
	}
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// TestSourceWithEmulators runs the source with the real SDK against the S3
// and SQS emulators: both notification shapes, several keys, an encoded
// key, a test event, a digest object and a corrupt gzip file.
func TestSourceWithEmulators(t *testing.T) {
	q, store, queueURL := emulators(t)
	recs, _ := filepath.Glob("../../fixtures/records/gp-*.json")
	var keys []string
	for i, p := range recs[:6] {
		b, _ := os.ReadFile(p)
		key := "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/03/01/file " + string(rune('a'+i)) + ".json.gz"
		store.Put("trail", key, gz(b))
		keys = append(keys, key)
	}
	good, _ := os.ReadFile("../../fixtures/records/dir-delete.json")
	corrupt := gz(good)
	store.Put("trail", "AWSLogs/1/CloudTrail/us-east-1/bad.json.gz", corrupt[:len(corrupt)/2])
	enc := func(k string) string { return url.QueryEscape(k) }
	q.Send(`{"Type":"Notification","Message":"{\"s3Bucket\":\"trail\",\"s3ObjectKey\":[\"` + keys[0] + `\",\"` + keys[1] + `\"]}"}`)
	q.Send(`{"s3Bucket":"trail","s3ObjectKey":["` + keys[2] + `","AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz"]}`)
	q.Send(`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"trail"},"object":{"key":"` + enc(keys[3]) + `"}}},` +
		`{"eventSource":"aws:s3","eventName":"ObjectCreated:Copy","s3":{"bucket":{"name":"trail"},"object":{"key":"` + enc(keys[4]) + `"}}}]}`)
	q.Send(`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-03-01T00:00:00Z","Bucket":"trail"}`)
	q.Send(`{"s3Bucket":"trail","s3ObjectKey":["AWSLogs/1/CloudTrail/us-east-1/bad.json.gz"]}`)
	q.Send(`{"s3Bucket":"trail","s3ObjectKey":["` + keys[5] + `"]}`)

	sq, s3c, err := s3sqs.NewClients(context.Background(), "http://queue")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{ids: map[string]int{}}
	src, _ := s3sqs.New(s3sqs.Options{QueueURL: queueURL, SQS: sq, S3: s3c, Workers: 2, WaitTime: time.Second,
		Visibility: 2 * time.Second, MaxReceives: 2, Logger: zerolog.Nop()})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if left, _, _ := q.Counts(); left == 1 && c.count() >= 6 {
				time.Sleep(3 * time.Second) // let the bad message come back at least once
				cancel()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if err := src.Run(ctx, c.handle); err != nil {
		t.Fatal(err)
	}
	left, deleted, _ := q.Counts()
	if deleted != 5 || left != 1 {
		t.Errorf("deleted %d, left %d: want every message but the corrupt file's deleted", deleted, left)
	}
	if n := q.Receives()["msg-000005"]; n < 2 {
		t.Errorf("the corrupt file's message was received %d times; it must come back", n)
	}
	// Six good files, each an encryption event (the corrupt file's event
	// may or may not come before the cut).
	if c.count() < 6 {
		t.Errorf("%d events, want at least 6", c.count())
	}
	if g := store.Gets()["trail/AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz"]; g != 0 {
		t.Error("a digest object was read")
	}
}

// TestReceivePermissionTakenAway: while ReceiveMessage is denied the
// workers back off (no tight loop, a log line when the wait grows), the
// failure is counted by reason and reported for /readyz; once allowed
// again the messages are read and the report clears.
func TestReceivePermissionTakenAway(t *testing.T) {
	q, store, queueURL := emulators(t)
	b, _ := os.ReadFile("../../fixtures/records/gp-delete.json")
	store.Put("trail", "AWSLogs/1/CloudTrail/us-east-1/a.json", b)
	q.Send(`{"s3Bucket":"trail","s3ObjectKey":["AWSLogs/1/CloudTrail/us-east-1/a.json"]}`)
	q.Deny(true)
	sq, s3c, err := s3sqs.NewClients(context.Background(), "http://queue")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var logs testkit.Buffer
	c := &collector{ids: map[string]int{}}
	src, _ := s3sqs.New(s3sqs.Options{QueueURL: queueURL, SQS: sq, S3: s3c, Workers: 2, WaitTime: time.Second,
		Visibility: 10 * time.Second, Logger: zerolog.New(&logs), Metrics: s3sqs.NewMetrics(reg)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, c.handle) }()
	time.Sleep(4 * time.Second)
	calls := q.Calls()["ReceiveMessage"]
	failing := src.Failing()
	if calls > 8 || calls < 2 {
		t.Errorf("%d ReceiveMessage calls in 4 s while denied; want a few (backing off)", calls)
	}
	if len(failing) != 1 || !strings.Contains(failing[0], "AccessDenied") {
		t.Errorf("Failing() = %v", failing)
	}
	if got := testkit.MetricValue(t, reg, "encwatch_sqs_receive_errors_total", "reason", "AccessDenied"); int(got) != calls {
		t.Errorf("receive errors{AccessDenied} = %v, calls %d", got, calls)
	}
	if n := strings.Count(logs.String(), "SQS ReceiveMessage failed"); n >= calls || n == 0 {
		t.Errorf("%d warnings for %d failures: want one per longer wait", n, calls)
	}
	q.Deny(false)
	testkit.Eventually(t, 20*time.Second, func() bool { return c.count() > 0 }, "no message read once allowed again")
	testkit.Eventually(t, 5*time.Second, func() bool { return len(src.Failing()) == 0 }, "the failure was not cleared")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestDoneMessagesStayInvisibleUntilDeleted: of ten messages received
// together and read one after the other for longer than the visibility
// timeout, those done first are deleted with the last; they must stay
// invisible until then, or SQS hands them out again and their events are
// judged twice.
func TestDoneMessagesStayInvisibleUntilDeleted(t *testing.T) {
	q, store, queueURL := emulators(t)
	store.Delay = 500 * time.Millisecond // ten files: 5 s, over the 2 s visibility
	good, _ := os.ReadFile("../../fixtures/records/dir-delete.json")
	for i := range 10 {
		key := fmt.Sprintf("AWSLogs/1/CloudTrail/us-east-1/f%02d.json.gz", i)
		store.Put("trail", key, gz(good))
		q.Send(`{"s3Bucket":"trail","s3ObjectKey":["` + key + `"]}`)
	}
	sq, s3c, err := s3sqs.NewClients(context.Background(), "http://queue")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{ids: map[string]int{}}
	src, _ := s3sqs.New(s3sqs.Options{QueueURL: queueURL, SQS: sq, S3: s3c, Workers: 2, WaitTime: time.Second,
		Visibility: 2 * time.Second, Logger: zerolog.Nop()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, deleted, _ := q.Counts(); deleted == 10 {
				time.Sleep(2500 * time.Millisecond) // anything visible again would be read by now
				cancel()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if err := src.Run(ctx, c.handle); err != nil {
		t.Fatal(err)
	}
	again := 0
	for _, n := range q.Receives() {
		if n > 1 {
			again++
		}
	}
	if left, deleted, _ := q.Counts(); again > 0 || deleted != 10 || left != 0 {
		t.Errorf("%d of 10 messages received more than once, %d deleted, %d left: want each once", again, deleted, left)
	}
}

// TestObjectPermissionTakenAway: the task role can no longer read one of
// two trail buckets. Its messages wait longer at each receive (no tight
// loop, a log line when the wait grows, not one per file), the failures
// are counted by reason and the bucket is named for /readyz; the other
// bucket's files are read at once. Once allowed, the waiting files are
// read and the report clears.
func TestObjectPermissionTakenAway(t *testing.T) {
	q, store, queueURL := emulators(t)
	good, _ := os.ReadFile("../../fixtures/records/dir-delete.json")
	for _, bucket := range []string{"trail-denied", "trail-ok"} {
		for i := range 3 {
			key := fmt.Sprintf("AWSLogs/1/CloudTrail/us-east-1/%s-%d.json.gz", bucket, i)
			store.Put(bucket, key, gz(good))
			q.Send(`{"s3Bucket":"` + bucket + `","s3ObjectKey":["` + key + `"]}`)
		}
	}
	store.DenyObjects("trail-denied", true)
	sq, s3c, err := s3sqs.NewClients(context.Background(), "http://queue")
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	reg := prometheus.NewRegistry()
	c := &collector{ids: map[string]int{}}
	src, _ := s3sqs.New(s3sqs.Options{QueueURL: queueURL, SQS: sq, S3: s3c, Workers: 2, WaitTime: time.Second,
		Visibility: time.Second, MaxReceives: 20, Logger: zerolog.New(&logs), Metrics: s3sqs.NewMetrics(reg)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, c.handle) }()
	testkit.Eventually(t, 10*time.Second, func() bool { _, deleted, _ := q.Counts(); return deleted == 3 }, "the readable bucket's 3 messages")
	time.Sleep(8 * time.Second)
	calls := store.ObjectCalls("trail-denied")
	// Waits of 1, 2, 4, 8 s: at most 4 tries a message in about 9 s, where
	// the visibility timeout alone would give 9.
	if calls > 15 { // the visibility timeout alone: 24 to 27
		t.Errorf("%d GetObject calls on the denied bucket in about 9 s: no backoff", calls)
	}
	if v := testkit.MetricValue(t, reg, "encwatch_sqs_object_errors_total", "reason", "AccessDenied"); int(v) != calls {
		t.Errorf("object errors by reason AccessDenied: %v, want the %d denied calls", v, calls)
	}
	if n := strings.Count(logs.String(), "log file unreadable"); n < 1 || n >= calls {
		t.Errorf("the failure was logged %d times for %d failed reads: want once, then as the wait grows", n, calls)
	}
	if f := src.Failing(); len(f) != 1 || !strings.HasPrefix(f[0], "s3://trail-denied: AccessDenied since ") {
		t.Errorf("Failing() = %q", f)
	}
	store.DenyObjects("trail-denied", false)
	testkit.Eventually(t, 30*time.Second, func() bool { _, deleted, _ := q.Counts(); return deleted == 6 }, "the denied bucket's messages once allowed")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f := src.Failing(); len(f) != 0 {
		t.Errorf("after recovery Failing() = %q", f)
	}
	if !strings.Contains(logs.String(), "log files of the bucket are read again") {
		t.Error("the recovery is not logged")
	}
	t.Logf("%d GetObject calls on the denied bucket's 3 messages in about 9 s", calls)
}

// emulators starts the SQS and S3 emulators, points the SDK at them and
// returns them with the queue's URL.
func emulators(t *testing.T) (*awsemu.SQS, *awsemu.S3, string) {
	t.Helper()
	q, store := awsemu.NewSQS(), awsemu.NewS3()
	qs, ss := httptest.NewServer(q), httptest.NewServer(store)
	t.Cleanup(qs.Close)
	t.Cleanup(ss.Close)
	testkit.AWSEnv(t, qs.URL)
	t.Setenv("AWS_ENDPOINT_URL_S3", ss.URL)
	return q, store, qs.URL + "/111122223333/trail-logs"
}
