package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/awsemu"
)

// TestReplicasShareOneQueue runs three daemons, each with its own state,
// on one SQS queue of trail log files. One is killed with SIGKILL while it
// holds messages; the others finish its files after SQS delivers them
// again. Every expected alert is delivered and no message is left.
func TestReplicasShareOneQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three daemons")
	}
	q, store := awsemu.NewSQS(), awsemu.NewS3()
	store.Delay = 400 * time.Millisecond // slow downloads: a replica holds files for a while
	qs, ss := httptest.NewServer(q), httptest.NewServer(store)
	defer qs.Close()
	defer ss.Close()
	want := map[string]bool{}
	noise := strings.Repeat(`{"eventVersion":"1.08","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","eventTime":"2026-03-01T00:00:00Z","eventID":"n"},`, 500)
	for i := range 24 {
		var keys []string
		for j := range 2 { // two files per notification
			id := fmt.Sprintf("replica-%02d-%d", i, j)
			body := `{"Records":[` + noise + string(lookupRecord(id, "DeleteBucketEncryption", time.Now().Add(-time.Hour))) + `]}`
			var z bytes.Buffer
			w := gzip.NewWriter(&z)
			w.Write([]byte(body))
			w.Close()
			key := fmt.Sprintf("AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/03/01/111122223333_CloudTrail_us-east-1_20260301T%02d%02dZ_x.json.gz", i, j)
			store.Put("org-trail", key, z.Bytes())
			keys = append(keys, `"`+key+`"`)
			want[alert.ID("encryption-deleted", "111122223333", id)] = true
		}
		q.Send(`{"s3Bucket":"org-trail","s3ObjectKey":[` + strings.Join(keys, ",") + `]}`)
	}
	env := []string{"AWS_ENDPOINT_URL_SQS=" + qs.URL, "AWS_ENDPOINT_URL_S3=" + ss.URL}
	var procs []*daemonProc
	start := func() {
		cfg := filepath.Join(t.TempDir(), "encwatch.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources:
  sqs: {queueURL: %q, workers: 2, visibility: 2s, waitTime: 1s}
sinks: {stdout: {}}
`, t.TempDir(), qs.URL+"/111122223333/trail-logs")), 0o600)
		procs = append(procs, startDaemon(t, cfg, "http://127.0.0.1:1", env...))
	}
	// The first replica starts alone, so that it surely receives messages
	// (up to 10 a call, read one after the other); the others join once it
	// is reading, and it is killed while it holds the rest.
	start()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		got, _ := procs[0].snapshot()
		if len(got) >= 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	start()
	start()
	procs[0].cmd.Process.Kill()
	procs[0].wait()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if left, _, _ := q.Counts(); left == 0 {
			break
		}
	}
	time.Sleep(300 * time.Millisecond) // the last alerts leave the outbox
	seen := map[string]int{}
	per := make([]int, 3)
	for i, p := range procs {
		if i > 0 {
			p.stop(t)
		}
		got, _ := p.snapshot()
		per[i] = len(got)
		for _, a := range got {
			seen[a.ID]++
		}
	}
	for id := range want {
		if seen[id] == 0 {
			t.Errorf("alert %s was never delivered", id)
		}
	}
	left, deleted, _ := q.Counts()
	if left != 0 || deleted != 24 {
		t.Errorf("%d messages left, %d deleted; want 0 and 24", left, deleted)
	}
	redelivered := 0
	for _, n := range q.Receives() {
		if n > 1 {
			redelivered++
		}
	}
	if redelivered == 0 {
		t.Error("no message was delivered twice: the killed replica held none, so the test proved nothing")
	}
	t.Logf("alerts per replica %v (the first was killed); %d messages delivered again after the kill", per, redelivered)
}
