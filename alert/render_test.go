package alert_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// renderFindings are findings of every shape the renderings meet: a
// directory bucket with a key, a general purpose bucket without actor ARN,
// a grouped finding with a count, and hostile text in names.
func renderFindings() []rules.Finding {
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	dir := &ingest.Event{ID: "00000000-0000-4000-8000-000000000201", Name: ingest.PutBucketEncryption, Source: ingest.SourceS3Express,
		Time: at, TimeRaw: "2026-03-02T10:00:00Z", Region: "us-west-2", Account: "111122223333", SourceIP: "198.51.100.7", UserAgent: "aws-cli/2.15",
		Actor:      ingest.Actor{Type: "AssumedRole", ARN: "arn:aws:sts::111122223333:assumed-role/ops/alice", AccountID: "111122223333"},
		Bucket:     ingest.Bucket{Name: "analytics--usw2-az1--x-s3", Type: ingest.BucketDirectory, Account: "111122223333", Region: "us-west-2", Zone: "usw2-az1", ARN: "arn:aws:s3express:us-west-2:111122223333:bucket/analytics--usw2-az1--x-s3"},
		Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-west-2:111122223333:key/k2", BucketKeyEnabled: true, BucketKeySet: true}}},
		Origin:     ingest.Position{Source: "AWSLogs/111122223333/CloudTrail/us-west-2/2026/03/02/x.json.gz", Index: 3}}
	gp := &ingest.Event{ID: "00000000-0000-4000-8000-000000000110", Name: ingest.DeleteBucketEncryption, Source: ingest.SourceS3,
		Time: at, Region: "us-east-1", Account: "111122223333", Actor: ingest.Actor{Type: "Root"},
		Bucket: ingest.Bucket{Name: `<img src=x onerror=alert(1)>`, Type: ingest.BucketGeneralPurpose, Account: "111122223333", ARN: "arn:aws:s3:::x"}}
	return []rules.Finding{
		{Rule: rules.DirectoryKMSKeyChanged, Severity: rules.High, Summary: "PutBucketEncryption on directory bucket analytics--usw2-az1--x-s3 names KMS key k2, but the bucket was set to key k1 earlier",
			Remediation: rules.Lookup(rules.DirectoryKMSKeyChanged).Remediation, Event: dir},
		{Rule: rules.EncryptionDeleted, Severity: rules.High, Summary: "default encryption deleted on general-purpose bucket <img src=x onerror=alert(1)>",
			Remediation: rules.Lookup(rules.EncryptionDeleted).Remediation, Event: gp},
		{Rule: rules.EncryptionReadBurst, Severity: rules.Low, Summary: "a caller read the encryption of 21 distinct buckets within 10m0s", Event: gp, Count: 21},
		{Rule: rules.RootPrincipal, Severity: rules.High, Summary: "DeleteBucketEncryption on general-purpose bucket evil\nCRITICAL forged-line\x1b[2J by the account root user",
			Event: &ingest.Event{ID: "id\r\u2028x", Name: ingest.DeleteBucketEncryption, Source: ingest.SourceS3, Account: "111122223333",
				Actor:  ingest.Actor{Type: "Root", ARN: "arn:aws:iam::111122223333:root\x07"},
				Bucket: ingest.Bucket{Name: "evil\nCRITICAL forged-line\x1b[2J", Type: ingest.BucketGeneralPurpose, Account: "111122223333"}}},
	}
}

// TestRenderingsGolden: the alert JSON (v1) and the text lines replay
// prints, byte for byte.
func TestRenderingsGolden(t *testing.T) {
	detected := time.Date(2026, 3, 2, 10, 0, 5, 0, time.UTC)
	var js, text bytes.Buffer
	jw, tw := alert.NewJSONWriter(&js), alert.NewTextWriter(&text)
	for _, f := range renderFindings() {
		a := alert.New(f, detected)
		if err := jw.Write(a); err != nil {
			t.Fatal(err)
		}
		if err := tw.Write(a); err != nil {
			t.Fatal(err)
		}
	}
	jw.Flush()
	tw.Flush()
	testkit.Golden(t, "alerts.jsonl", js.Bytes())
	testkit.Golden(t, "alerts.txt", text.Bytes())
}

// TestTextEscapesControlCharacters: hostile text cannot add a line to
// replay's text output nor reach the terminal as an escape sequence.
func TestTextEscapesControlCharacters(t *testing.T) {
	fs := renderFindings()
	line := alert.Text(alert.New(fs[len(fs)-1], time.Now()))
	for _, bad := range []string{"\n", "\r", "\x1b", "\x07", "\u2028"} {
		if bytes.Contains([]byte(line), []byte(bad)) {
			t.Errorf("the text line holds %q: %q", bad, line)
		}
	}
	if !bytes.Contains([]byte(line), []byte(`evil\x0aCRITICAL forged-line\x1b[2J`)) {
		t.Errorf("the escaped name is not readable: %q", line)
	}
}
