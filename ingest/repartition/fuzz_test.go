package repartition_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/repartition"
)

// FuzzDecode: whatever a message holds, Decode returns an error or an
// event encwatch judges within the limits, and an accepted event encodes
// and decodes to itself (what the judging task sees is what was sent).
func FuzzDecode(f *testing.F) {
	kms := &ingest.Event{ID: "k", Name: ingest.ScheduleKeyDeletion, Source: ingest.SourceKMS, Account: "1",
		KMS: ingest.KMSRequest{KeyID: "arn:aws:kms:us-east-1:1:key/k", PendingWindowInDays: 7}}
	inv := &ingest.Event{ID: "i", Name: ingest.GetBucketEncryption, Source: ingest.SourceS3, Bucket: ingest.Bucket{Name: "b", Account: "1"},
		Inventory: &ingest.InventoryRead{ErrorCode: "AccessDenied"}}
	data := &ingest.Event{ID: "d", Name: ingest.PutObject, Source: ingest.SourceS3Express, Object: ingest.ObjectRequest{Key: "o", Requested: "AES256"}}
	for _, ev := range []*ingest.Event{put("111111111111", 1), kms, inv, data} {
		b, err := repartition.Encode(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"v":2,"event":{}}`))
	f.Add([]byte(`{"v":1,"event":{"Name":"DescribeInstances","Source":"ec2.amazonaws.com"}}`))
	f.Add([]byte(`{"v":1,"event":{"Name":"PutBucketEncryption","Source":"s3.amazonaws.com","Encryption":{"Rules":[{},{},{}]}}}`))
	lim := ingest.Limits{MaxRecordBytes: 1 << 16, MaxRules: 2}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := repartition.Decode(b, lim)
		if err != nil {
			if ev != nil {
				t.Fatal("an error and an event")
			}
			return
		}
		if !ev.IsEncryptionEvent() && !ev.IsKMSEvent() && !ev.IsDataEvent() && ev.Inventory == nil {
			t.Fatalf("accepted %q from %q", ev.Name, ev.Source)
		}
		if len(ev.Encryption.Rules) > lim.MaxRules {
			t.Fatalf("%d rules past the limit of %d", len(ev.Encryption.Rules), lim.MaxRules)
		}
		again, err := repartition.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := repartition.Decode(again, ingest.Limits{MaxRecordBytes: 1 << 20, MaxRules: lim.MaxRules})
		if err != nil {
			t.Fatalf("its own encoding refused: %v", err)
		}
		if !reflect.DeepEqual(normal(ev), normal(back)) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, back)
		}
	})
}

// normal drops what JSON cannot carry exactly (time zones of equal
// instants) before comparing.
func normal(ev *ingest.Event) ingest.Event {
	e := *ev
	e.Time = e.Time.UTC().Round(0)
	return e
}

// TestDecodeRefuses: the limits and the kinds.
func TestDecodeRefuses(t *testing.T) {
	big := make([]byte, 70<<10)
	if _, err := repartition.Decode(big, ingest.Limits{MaxRecordBytes: 64 << 10}); !errors.Is(err, repartition.ErrTooLarge) {
		t.Errorf("a 70 KiB message under a 64 KiB limit: %v", err)
	}
	if _, err := repartition.Decode([]byte(`{"v":2,"event":{"Name":"PutBucketEncryption","Source":"s3.amazonaws.com"}}`), ingest.Limits{}); !errors.Is(err, repartition.ErrVersion) {
		t.Errorf("version 2: %v", err)
	}
	if _, err := repartition.Decode([]byte(`{"v":1,"event":{"Name":"RunInstances","Source":"ec2.amazonaws.com"}}`), ingest.Limits{}); !errors.Is(err, repartition.ErrKind) {
		t.Errorf("an EC2 event: %v", err)
	}
	ev, err := repartition.Decode([]byte(`{"v":1,"event":{"Name":"PutBucketEncryption","Source":"s3.amazonaws.com","Encryption":{"Rules":[{},{},{}]}}}`), ingest.Limits{MaxRules: 2})
	if err != nil || len(ev.Encryption.Rules) != 2 || ev.Encryption.Dropped != 1 {
		t.Errorf("3 rules under a limit of 2: %v, %+v", err, ev)
	}
}
