package ingest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/encwatch/encwatch/ingest"
)

// addSeeds adds every fixture record file (and the real samples, when
// present) to a fuzz corpus.
func addSeeds(f *testing.F) {
	for _, pattern := range []string{"../fixtures/records/*", realData + "/samples/*.json*"} {
		files, _ := filepath.Glob(pattern)
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"Records":[{"eventVersion":"1.0","eventName":"PutBucketEncryption"`))
	f.Add([]byte(`[{"CloudTrailEvent":"{\"eventName\":\"DeleteBucketEncryption\"}"}]`))
}

// fuzzDecode runs arbitrary bytes (plain or gzip) through the streaming
// decoder: it must not panic or hang, every event it emits must be one it
// reads, and its counts must be consistent.
func fuzzDecode(t *testing.T, data []byte, dataEvents bool) {
	r, release, err := ingest.Decompress(bytes.NewReader(data))
	if err != nil {
		return
	}
	defer release()
	var n int64
	d := ingest.Decoder{
		Source: "fuzz", DataEvents: dataEvents,
		// Mutated gzip streams can inflate to gigabytes: bound them as a
		// hostile-input deployment would.
		Limits: ingest.Limits{MaxRecordBytes: 64 << 10, MaxInputBytes: 4 << 20},
		OnEvent: func(ev *ingest.Event) error {
			n++
			if !ev.IsEncryptionEvent() && !ev.IsKMSEvent() && !(dataEvents && ev.IsDataEvent()) {
				t.Fatalf("emitted an event it does not read: %s %s", ev.Source, ev.Name)
			}
			_ = ev.Object.Overrides()
			_ = ev.Object.KMS()
			return nil
		},
		OnError: func(ingest.Position, error) {},
	}
	st, _ := d.Decode(r)
	if st.Events != n || st.Candidates > st.Records+1 && st.Records > 0 {
		t.Fatalf("inconsistent stats %+v (emitted %d)", st, n)
	}
}

// FuzzDecode fuzzes the decoder as replay runs it without data rules.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, false) })
}

// FuzzDecodeDataEvents is FuzzDecode with data events on: the data-event
// prefilter and fields (request headers, SSEApplied, copy source,
// UpdateObjectEncryption) must take any input.
func FuzzDecodeDataEvents(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, true) })
}

// FuzzDecodeRecord decodes arbitrary bytes as one record.
func FuzzDecodeRecord(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ingest.DecodeRecord(data)
		if err == nil && (ev.Name == "" || ev.Source == "") {
			t.Fatalf("decoded a record without eventName or eventSource")
		}
	})
}
