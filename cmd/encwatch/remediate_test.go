package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/remediate"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestDaemonRemediation: a Delete of a bucket's encryption is answered by
// writing its last compliant configuration back; a kill -9 between the
// read and the write is retried after the restart and ends on the same
// configuration (written once or twice, never another); the sink's own
// Put coming back through the trail is never answered.
func TestDaemonRemediation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for about 15 s")
	}
	w := awsemu.NewWorld()
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	const a = "111122223333"
	key := "arn:aws:kms:us-east-1:" + a + ":key/k1"
	on := true
	// What the trail shows: a compliant Put, then a Delete by an intruder;
	// what S3 now holds: SSE-S3, SSE-C still blocked.
	now := time.Now()
	good := `{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"` + key + `"},"BucketKeyEnabled":true,"BlockedEncryptionTypes":{"EncryptionType":"SSE-C"}}`
	for _, r := range []testkit.Record{
		{ID: "good-put", Bucket: "shop", Time: now.Add(-10 * time.Minute), Rules: good},
		{ID: "bad-delete", Name: "DeleteBucketEncryption", Bucket: "shop", Time: now.Add(-5 * time.Minute), Actor: "arn:aws:iam::" + a + ":user/intruder"},
	} {
		if err := w.CloudTrail.AddRecord(a, "us-east-1", r.Build(), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	w.S3.AddBucket(awsemu.Bucket{Name: "shop", Account: a, Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"SSE-C"}}}})
	want := awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: key, BucketKey: &on, Blocked: []string{"SSE-C"}}
	held := w.S3.HoldPuts()

	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "encwatch.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: debug}
sources:
  lookup: {regions: [us-east-1], interval: 1s, overlap: 20m, startFrom: 1h}
sinks:
  stdout: {}
  remediate: {dryRun: false, roleName: encwatch-remediate, rate: 5}
`, state)), 0o600)
	d1 := startDaemon(t, cfg, srv.URL)
	var release chan struct{}
	select {
	case release = <-held:
	case <-time.After(30 * time.Second):
		_, logs := d1.snapshot()
		t.Fatalf("no PutBucketEncryption came; log:\n%v", logs)
	}
	// Killed between the read and the write's answer; the write lands.
	d1.cmd.Process.Signal(syscall.SIGKILL)
	d1.wait()
	close(release)
	stopReleasing := make(chan struct{})
	t.Cleanup(func() { close(stopReleasing) })
	go func() { // later writes pass at once
		for {
			select {
			case r := <-held:
				close(r)
			case <-stopReleasing:
				return
			}
		}
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return len(w.S3.Puts()) == 1 }, "the held write did not land")

	d2 := startDaemon(t, cfg, srv.URL)
	var answer alert.Alert
	testkit.Eventually(t, 30*time.Second, func() bool {
		got, _ := d2.snapshot()
		for _, al := range got {
			if al.Rule == remediate.Applied {
				answer = al
				return true
			}
		}
		return false
	}, "no remediation-applied alert after the restart")
	if answer.Action == nil || answer.Action.Rule != "encryption-deleted" || len(answer.Action.Written) != 1 || answer.Action.Written[0].KMSKeyID != key {
		t.Errorf("remediation alert %+v", answer.Action)
	}
	// The sink's own Put comes back through the trail, with the Bucket Key
	// off (bucket-key-disabled): it is not answered.
	own := testkit.Record{ID: "own-put", Bucket: "shop", Time: time.Now().Add(-time.Minute), Actor: "arn:aws:sts::" + a + ":assumed-role/encwatch-remediate/encwatch-remediate",
		Rules: `{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"` + key + `"},"BucketKeyEnabled":false,"BlockedEncryptionTypes":{"EncryptionType":"SSE-C"}}`}
	w.CloudTrail.AddRecord(a, "us-east-1", own.Build(), time.Time{})
	ownID := alert.ID("bucket-key-disabled", a, "own-put")
	d2.waitAlerts(t, map[string]bool{ownID: true}, 20*time.Second)
	time.Sleep(3 * time.Second) // time for the sink to (not) answer it
	d2.stop(t)
	got, _ := d2.snapshot()
	for _, al := range got {
		if al.Action != nil && al.Action.Finding == ownID {
			t.Errorf("the sink answered its own change: %+v", al)
		}
	}
	puts := w.S3.Puts()
	for _, p := range puts {
		if len(p.Rules) != 1 || p.Rules[0].Algorithm != want.Algorithm || p.Rules[0].KMSKeyID != want.KMSKeyID || p.Rules[0].BucketKey == nil ||
			!*p.Rules[0].BucketKey || !slices.Equal(p.Rules[0].Blocked, want.Blocked) {
			t.Errorf("a write of %+v, want only %+v", p.Rules, want)
		}
	}
	if n := len(puts); n < 1 || n > 2 {
		t.Errorf("%d writes, want 1 or 2", n)
	}
	t.Logf("%d writes of the same configuration; the answer after the restart: %s", len(puts), answer.Summary)
}
