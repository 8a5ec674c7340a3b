package ingest_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/ingest"
)

// realData is the shared folder of real CloudTrail records, beside the repo.
const realData = "../../shared/data/cloudtrail-real"

func needRealData(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(realData); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("real CloudTrail data missing at %s: %v", realData, err)
		}
		t.Skipf("real CloudTrail data not found at %s (it lives in shared/ beside the repo)", realData)
	}
}

type collected struct {
	events []*ingest.Event
	errs   []string
}

func readPaths(t *testing.T, paths ...string) (collected, ingest.Stats) {
	t.Helper()
	inputs, err := ingest.Expand(paths)
	if err != nil {
		t.Fatal(err)
	}
	var c collected
	st, err := ingest.ReadAll(context.Background(), inputs, ingest.ReadOptions{
		OnError: func(p ingest.Position, err error) { c.errs = append(c.errs, p.String()+": "+err.Error()) },
	}, func(evs []*ingest.Event) error { c.events = append(c.events, evs...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

// TestInvictusDataset reads the 55 real log files and compares with counts
// taken by decoding every record with encoding/json.
func TestInvictusDataset(t *testing.T) {
	needRealData(t)
	dir := filepath.Join(realData, "invictus-ir_aws_dataset")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	wantRecords, wantEnc := 0, map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Records []struct {
				EventID, EventName, EventSource string
			}
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		wantRecords += len(doc.Records)
		for _, r := range doc.Records {
			if strings.HasSuffix(r.EventName, "BucketEncryption") && r.EventSource == "s3.amazonaws.com" {
				wantEnc[r.EventID] = true
			}
		}
	}
	c, st := readPaths(t, dir)
	if len(c.errs) > 0 {
		t.Fatalf("real records must decode without error, got %d: %v", len(c.errs), c.errs[:min(5, len(c.errs))])
	}
	if wantRecords != 2900 || st.Records != int64(wantRecords) {
		t.Errorf("records: read %d, encoding/json counts %d (2,900 expected)", st.Records, wantRecords)
	}
	if len(wantEnc) != 10 || len(c.events) != len(wantEnc) {
		t.Errorf("encryption events: read %d, encoding/json finds %d (10 expected)", len(c.events), len(wantEnc))
	}
	for _, ev := range c.events {
		if !wantEnc[ev.ID] {
			t.Errorf("unexpected event %s %s", ev.ID, ev.Name)
		}
		if ev.Name != ingest.GetBucketEncryption || ev.Bucket.Type != ingest.BucketGeneralPurpose ||
			!strings.HasPrefix(ev.Bucket.Name, "stratus-red-team-") || ev.Bucket.ARN != "arn:aws:s3:::"+ev.Bucket.Name ||
			ev.Actor.ARN != "arn:aws:iam::123837392027:user/bert-jan" || ev.Account != "123837392027" || ev.Time.IsZero() {
			t.Errorf("event %s normalised wrongly: %+v", ev.ID, ev)
		}
	}
}

// TestSamples reads every sample file: valid JSON decodes with no error;
// the invalid documentation samples are reported with a position, and the
// other files still go through.
func TestSamples(t *testing.T) {
	needRealData(t)
	dir := filepath.Join(realData, "samples")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") && !strings.HasSuffix(name, ".json.gz") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			valid := true
			if strings.HasSuffix(name, ".json") {
				b, _ := os.ReadFile(path)
				valid = json.Valid(b)
			}
			c, st := readPaths(t, path)
			if valid && len(c.errs) > 0 {
				t.Errorf("valid JSON reported as bad: %v", c.errs)
			}
			if !valid {
				if len(c.errs) == 0 {
					t.Errorf("invalid JSON not reported")
				}
				for _, e := range c.errs {
					if !strings.Contains(e, name+":") {
						t.Errorf("error does not say where: %s", e)
					}
				}
			}
			if valid && st.Records == 0 {
				t.Errorf("no record read")
			}
		})
	}
	// All samples at once: the bad ones do not stop the good ones.
	c, _ := readPaths(t, dir)
	names := map[string]int{}
	for _, ev := range c.events {
		names[ev.Name]++
	}
	if names[ingest.GetBucketEncryption] != 10 || names[ingest.DeleteBucketEncryption] != 3 || names[ingest.PutBucketEncryption] != 1 {
		t.Errorf("events from samples: %v", names)
	}
}
