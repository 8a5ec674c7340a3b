package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

const invAccount = "111122223333"

func inventoryConfig(t *testing.T, state string) string {
	t.Helper()
	cfg := fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: debug}
sources:
  lookup: {regions: [us-east-1], interval: 1s, overlap: 20m, startFrom: 1h}
  inventory: {interval: 10s, rate: 200}
sinks:
  stdout: {}
`, state)
	p := filepath.Join(t.TempDir(), "encwatch.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inventoryFindings counts the inventory alerts by bucket and rule, and
// checks every repeat of one carries the same id.
func inventoryFindings(t *testing.T, as []alert.Alert) map[string]int {
	t.Helper()
	ids := map[string]string{}
	out := map[string]int{}
	for _, a := range as {
		if a.Basis != alert.BasisInventory {
			continue
		}
		k := a.Bucket.Name + " " + a.Rule
		if id, ok := ids[k]; ok && id != a.ID {
			t.Errorf("%s alerted with ids %s and %s", k, id, a.ID)
		}
		ids[k] = a.ID
		out[k]++
	}
	return out
}

func scansFinished(d *daemonProc) int {
	_, logs := d.snapshot()
	n := 0
	for _, l := range logs {
		if strings.Contains(l, "inventory scan finished") {
			n++
		}
	}
	return n
}

// TestDaemonInventory runs the inventory in the daemon against the S3, KMS
// and STS emulators: killed mid-scan, the next start completes the scan and
// every finding arrives (resends with the same id); a configuration
// scanned again, also after a restart, alerts no more; a change with no
// event is drift; a directory bucket's first Put naming another key than
// the scanned one is directory-kms-key-changed.
func TestDaemonInventory(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for about 40 s")
	}
	w := awsemu.NewWorld()
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	on := true
	want := map[string]bool{}
	const n = 1000
	for i := range n {
		name := fmt.Sprintf("estate-%04d", i)
		rule := awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: "k-good", BucketKey: &on, Blocked: []string{"SSE-C"}}
		switch i % 50 {
		case 1:
			rule = awsemu.Rule{Algorithm: "AES256", Blocked: []string{"SSE-C"}}
			want[name+" algorithm-not-allowed"] = true
		case 2:
			rule = awsemu.Rule{Algorithm: "aws:kms", KMSKeyID: "k-good", BucketKey: &on, Blocked: []string{"NONE"}}
			want[name+" sse-c-unblocked"] = true
		}
		w.S3.AddBucket(awsemu.Bucket{Name: name, Account: invAccount, Region: "us-east-1", Rules: []awsemu.Rule{rule}})
	}
	w.KMS.AddKey(awsemu.Key{ID: "k-good", Account: invAccount, Region: "us-east-1"})
	w.KMS.AddKey(awsemu.Key{ID: "k-dir", Account: invAccount, Region: "us-east-1"})
	const dir = "fast--use1-az4--x-s3"
	dirKey := "arn:aws:kms:us-east-1:" + invAccount + ":key/k-dir"
	w.S3.AddBucket(awsemu.Bucket{Name: dir, Account: invAccount, Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: dirKey, BucketKey: &on}}})

	state := t.TempDir()
	cfg := inventoryConfig(t, state)
	d1 := startDaemon(t, cfg, srv.URL)
	testkit.Eventually(t, 20*time.Second, func() bool { got, _ := d1.snapshot(); return len(inventoryFindings(t, got)) > 0 }, "no inventory alert")
	d1.cmd.Process.Signal(syscall.SIGKILL)
	d1.wait()
	first, _ := d1.snapshot()
	if got := len(inventoryFindings(t, first)); got >= len(want) || scansFinished(d1) > 0 {
		t.Fatalf("the kill did not land mid-scan: %d of %d findings, %d scans finished", got, len(want), scansFinished(d1))
	}
	t.Logf("killed mid-scan with %d of %d findings delivered", len(inventoryFindings(t, first)), len(want))

	d2 := startDaemon(t, cfg, srv.URL)
	testkit.Eventually(t, 30*time.Second, func() bool { return scansFinished(d2) >= 1 }, "the restarted scan did not finish")
	// Drift: a change no event tells of, seen by the next scan.
	w.S3.SetRules("estate-0000", awsemu.Rule{Algorithm: "AES256", Blocked: []string{"SSE-C"}})
	want["estate-0000 algorithm-not-allowed"], want["estate-0000 encryption-drift"] = true, true
	testkit.Eventually(t, 30*time.Second, func() bool { return scansFinished(d2) >= 2 }, "no second scan")
	// The directory bucket's first Put names another key than the scanned one.
	put := testkit.Record{ID: "dir-put", Bucket: dir, Time: time.Now().Add(-time.Minute),
		Rules: `{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"arn:aws:kms:us-east-1:` + invAccount + `:key/k-other"},"BucketKeyEnabled":true}`}.Build()
	if err := w.CloudTrail.AddRecord(invAccount, "us-east-1", put, time.Time{}); err != nil {
		t.Fatal(err)
	}
	d2.waitAlerts(t, map[string]bool{alert.ID("directory-kms-key-changed", invAccount, "dir-put"): true}, 20*time.Second)
	d2.stop(t)
	second, _ := d2.snapshot()

	d3 := startDaemon(t, cfg, srv.URL)
	testkit.Eventually(t, 30*time.Second, func() bool { return scansFinished(d3) >= 1 }, "no scan after the restart")
	d3.stop(t)
	third, _ := d3.snapshot()

	all := inventoryFindings(t, append(append(first, second...), third...))
	for k := range want {
		if all[k] == 0 {
			t.Errorf("%s: never alerted", k)
		}
	}
	for k, c := range all {
		if !want[k] {
			t.Errorf("%s: alerted %d times, not expected", k, c)
		}
	}
	resent := 0
	for k := range inventoryFindings(t, first) {
		resent += all[k] - 1
	}
	if after := inventoryFindings(t, third); len(after) != 0 {
		t.Errorf("the scan after a restart alerted again: %v", after)
	}
	for k, c := range inventoryFindings(t, second) {
		if c > 1 {
			t.Errorf("%s alerted %d times by one run", k, c)
		}
	}
	t.Logf("%d findings over %d buckets, %d resent after the kill (same ids)", len(all), n+1, resent)
}
