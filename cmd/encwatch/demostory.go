package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/encwatch/encwatch/fixtures"
)

// storyBucket is the bucket the demo's ransomware story happens to.
const storyBucket = "customer-exports"

// foreignKey is the key of the attacker's account in the story.
const foreignKey = "arn:aws:kms:us-east-1:444455556666:key/aaaaaaaa-2222-3333-4444-555555555555"

// story plays the two attacks of the README's "Detecting SSE-C and KMS
// ransomware" on one bucket, after the history: SSE-C unblocked, then
// objects written with SSE-C (data events, in a trail file for the files
// source), then the default key set to another account's key, then that
// key scheduled for deletion.
func (d *demo) story(now time.Time) error {
	steps := []struct {
		file string
		edit func(map[string]any)
	}{
		{"records/gp-put-ssec-none.json", nil},
		{"records/gp-put-kms-foreign-key-arn.json", nil},
		{"records/kms-schedule-key-deletion.json", func(m map[string]any) {
			m["awsRegion"] = "us-east-1"
			m["requestParameters"] = map[string]any{"keyId": foreignKey, "pendingWindowInDays": 7}
			m["responseElements"] = map[string]any{"keyId": foreignKey, "keyState": "PendingDeletion",
				"deletionDate": now.Add(7 * 24 * time.Hour).UTC().Format("Jan 2, 2006 15:04:05 PM")}
			m["resources"] = []any{map[string]any{"accountId": "444455556666", "type": "AWS::KMS::Key", "ARN": foreignKey}}
		}},
	}
	for i, s := range steps {
		raw, err := fixtures.Records.ReadFile(s.file)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("%s: %w", s.file, err)
		}
		if rp, ok := m["requestParameters"].(map[string]any); ok && rp["bucketName"] != nil {
			rp["bucketName"], rp["Host"] = storyBucket, storyBucket+".s3.us-east-1.amazonaws.com"
			m["resources"] = []any{map[string]any{"accountId": demoAccount, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::" + storyBucket}}
		}
		if s.edit != nil {
			s.edit(m)
		}
		b, _ := json.Marshal(m)
		d.add(b, now.Add(time.Duration(i-len(steps))*5*time.Second), now)
	}
	return d.sseCWrites(now.Add(-30 * time.Minute))
}

// sseCWrites writes a trail file of PutObject calls with SSE-C on the
// story's bucket, half an hour old, so that their one-minute window closes
// at the daemon's first expiry tick.
func (d *demo) sseCWrites(at time.Time) error {
	var recs []any
	for i := range 3 {
		recs = append(recs, map[string]any{
			"eventVersion": "1.11", "eventTime": at.Add(time.Duration(i) * 10 * time.Second).UTC().Format(time.RFC3339),
			"userIdentity": map[string]any{"type": "AssumedRole", "arn": "arn:aws:sts::" + demoAccount + ":assumed-role/stolen-app/x", "accountId": demoAccount},
			"eventSource":  "s3.amazonaws.com", "eventName": "PutObject", "awsRegion": "us-east-1", "eventCategory": "Data",
			"requestParameters": map[string]any{"bucketName": storyBucket, "Host": storyBucket + ".s3.us-east-1.amazonaws.com",
				"key": fmt.Sprintf("exports/%04d.csv", i), "x-amz-server-side-encryption-customer-algorithm": "AES256"},
			"additionalEventData": map[string]any{"SSEApplied": "SSE_C"},
			"eventID":             fmt.Sprintf("demo-ssec-%d-%d", at.Unix(), i), "recipientAccountId": demoAccount,
			"resources": []any{map[string]any{"accountId": demoAccount, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::" + storyBucket}},
		})
	}
	b, err := json.Marshal(map[string]any{"Records": recs})
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s_CloudTrail_us-east-1_%sZ_demo.json", demoAccount, at.UTC().Format("20060102T1504"))
	p := filepath.Join(d.dataDir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return err
	}
	old := time.Now().Add(-time.Minute) // settled, so the files source reads it at once
	return os.Chtimes(p, old, old)
}
