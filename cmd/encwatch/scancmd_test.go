package main

import (
	"bufio"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// scanWorld is a small estate: a compliant bucket, one on SSE-S3 with
// SSE-C allowed, one under a key of another account named by alias, one
// the reader may not read, and a directory bucket on the AWS managed key.
func scanWorld(t *testing.T) {
	t.Helper()
	w := awsemu.NewWorld()
	w.CloudTrail.Delay = 0
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	testkit.AWSEnv(t, srv.URL)
	on := true
	const a = "111122223333"
	w.KMS.AddKey(awsemu.Key{ID: "k-good", Account: a, Region: "us-east-1"})
	w.KMS.AddKey(awsemu.Key{ID: "k-evil", Account: "999988887777", Region: "us-east-1", Shared: true})
	w.KMS.AddKey(awsemu.Key{ID: "aws-s3", Account: a, Region: "us-east-1", Manager: "AWS", Aliases: []string{"alias/aws/s3"}})
	for _, b := range []awsemu.Bucket{
		{Name: "good", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "k-good", BucketKey: &on, Blocked: []string{"SSE-C"}}}},
		{Name: "plain", Rules: []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"NONE"}}}},
		{Name: "hostage", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-east-1:999988887777:key/k-evil", BucketKey: &on, Blocked: []string{"SSE-C"}}}},
		{Name: "locked", Deny: true, Rules: []awsemu.Rule{{Algorithm: "AES256"}}},
		{Name: "fast--use1-az4--x-s3", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "alias/aws/s3"}}},
	} {
		b.Account, b.Region = a, "us-east-1"
		w.S3.AddBucket(b)
	}
}

func TestScanCommand(t *testing.T) {
	scanWorld(t)
	cfg := filepath.Join(t.TempDir(), "encwatch.yaml")
	if err := os.WriteFile(cfg, []byte("sources:\n  inventory: {regions: [us-east-1], rate: 100}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "", "scan", "--config", cfg)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n")[1:] {
		f := strings.Fields(l)
		lines[f[4]] = l
	}
	for name, want := range map[string][]string{
		"good":                 {"compliant", "aws:kms", "k-good"},
		"plain":                {"non-compliant", "AES256", "algorithm-not-allowed,sse-c-unblocked"},
		"hostage":              {"non-compliant", "kms-key-foreign-account"},
		"locked":               {"unknown", "unreadable: AccessDenied"},
		"fast--use1-az4--x-s3": {"non-compliant", "directory", "kms-aws-managed-key"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[name], w) {
				t.Errorf("%s: line %q lacks %q", name, lines[name], w)
			}
		}
	}
	if !strings.Contains(stderr, "5 buckets (4 general purpose, 1 directory): 1 compliant, 3 non-compliant, 1 unknown; 4 findings") {
		t.Errorf("summary:\n%s", stderr)
	}

	code, stdout, _ = runCLI(t, "", "scan", "--config", cfg, "--format", "json", "--fail-on", "critical")
	if code != exitFindings {
		t.Errorf("--fail-on critical with a foreign key: exit %d, want 1", code)
	}
	n := 0
	for sc := bufio.NewScanner(strings.NewReader(stdout)); sc.Scan(); n++ {
		var a alert.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("not an alert: %v: %s", err, sc.Text())
		}
		if a.Basis != alert.BasisInventory || a.Event.Name != "GetBucketEncryption" || a.Event.Actor.ARN != "" || a.Encryption == nil {
			t.Errorf("alert %+v", a)
		}
	}
	if n != 4 {
		t.Errorf("%d alerts, want 4", n)
	}
	if code, _, _ := runCLI(t, "", "scan", "--format", "xml"); code != exitUsage {
		t.Errorf("--format xml: exit %d", code)
	}
}
