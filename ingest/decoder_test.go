package ingest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/ingest"
)

func decode(t *testing.T, r io.Reader, maxRecord int) ([]*ingest.Event, []string, ingest.Stats, error) {
	t.Helper()
	var evs []*ingest.Event
	var errs []string
	d := ingest.Decoder{
		Source:  "test",
		Limits:  ingest.Limits{MaxRecordBytes: maxRecord},
		OnEvent: func(e *ingest.Event) error { evs = append(evs, e); return nil },
		OnError: func(p ingest.Position, err error) { errs = append(errs, p.String()+": "+err.Error()) },
	}
	dr, release, err := ingest.Decompress(r)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st, err := d.Decode(dr)
	return evs, errs, st, err
}

func record(id, name, extra string) string {
	return `{"eventVersion":"1.09","eventTime":"2026-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"` + name +
		`","awsRegion":"us-east-1","requestParameters":{"bucketName":"b-` + id + `","Host":"b.s3.amazonaws.com"` + extra + `},"eventID":"` + id + `","recipientAccountId":"111122223333"}`
}

func ids(evs []*ingest.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.ID)
	}
	return strings.Join(s, ",")
}

func TestEnvelopes(t *testing.T) {
	put := record("p1", "PutBucketEncryption", `,"ServerSideEncryptionConfiguration":{"Rule":{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}}`)
	del := record("d1", "DeleteBucketEncryption", "")
	other := record("o1", "GetBucketAcl", "")
	quoted := func(s string) string { b := new(bytes.Buffer); fmt.Fprintf(b, "%q", s); return b.String() }
	tests := []struct {
		name, in, want string
		errs           int
	}{
		{"compact log file", `{"Records":[` + put + `,` + other + `,` + del + `]}`, "p1,d1", 0},
		{"pretty log file", "{\n  \"Records\": [\n" + put + ",\n" + other + ",\n" + del + "\n  ]\n}\n", "p1,d1", 0},
		{"JSON array", "[" + put + ",\n" + del + "]", "p1,d1", 0},
		{"JSON lines", put + "\n" + other + "\n" + del + "\n", "p1,d1", 0},
		{"single record", put, "p1", 0},
		{"LookupEvents output", `{"NextToken":"x","Events":[{"EventId":"p1","EventName":"PutBucketEncryption","EventSource":"s3.amazonaws.com","CloudTrailEvent":` + quoted(put) + `}]}`, "p1", 0},
		{"LookupEvents output, Events first", `{"Events":[{"EventName":"DeleteBucketEncryption","CloudTrailEvent":` + quoted(del) + `}]}`, "d1", 0},
		{"EventBridge", `{"version":"0","detail-type":"AWS API Call via CloudTrail","source":"aws.s3","detail":` + del + `}`, "d1", 0},
		{"JSON lines of log files", `{"Records":[` + put + "]}\n" + `{"Records":[` + del + "]}\n", "p1,d1", 0},
		{"byte order mark", "\xef\xbb\xbf" + put, "p1", 0},
		{"broken line in JSON lines", put + "\n" + `{"eventName":"DeleteBucketEncryption", broken}` + "\n" + del + "\n", "p1,d1", 1},
		{"not JSON", "eventVersion: 1.09\nfoo: bar\n", "", 1},
		{"truncated record", put + "\n" + del[:len(del)-20], "p1", 1},
		{"scalar in array", "[" + put + ", 42, " + del + "]", "p1,d1", 1},
		{"unknown shape holding the needle", `{"hello":"PutBucketEncryption"}`, "", 1},
		{"empty log file", `{"Records":[]}`, "", 0},
		{"empty input", ``, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, errs, _, err := decode(t, strings.NewReader(tt.in), 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(evs); got != tt.want {
				t.Errorf("events %q, want %q", got, tt.want)
			}
			if len(errs) != tt.errs {
				t.Errorf("%d errors, want %d: %v", len(errs), tt.errs, errs)
			}
		})
	}
}

// chunkReader returns the data in random small pieces, to move every
// record across read and buffer boundaries.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
	max  int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.rng.IntN(c.max), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// bigLog builds a compact log file of n records, every k-th an encryption
// event, with padding so that it spans several buffers.
func bigLog(n, k int, pretty bool) ([]byte, []string) {
	var b bytes.Buffer
	var want []string
	sep := ","
	b.WriteString(`{"Records":[`)
	if pretty {
		b.Reset()
		b.WriteString("{\n\"Records\": [\n")
		sep = ",\n"
	}
	pad := strings.Repeat("x", 700)
	for i := range n {
		if i > 0 {
			b.WriteString(sep)
		}
		id := fmt.Sprintf("r%05d", i)
		if i%k == 0 {
			b.WriteString(record(id, "DeleteBucketEncryption", `,"pad":"`+pad+`"`))
			want = append(want, id)
		} else {
			b.WriteString(record(id, "AssumeRole", `,"pad":"`+pad+`"`))
		}
	}
	b.WriteString("]}")
	return b.Bytes(), want
}

func TestBoundaries(t *testing.T) {
	for _, pretty := range []bool{false, true} {
		data, want := bigLog(6000, 37, pretty)
		for _, maxChunk := range []int{1, 7, 4096, 1 << 20} {
			t.Run(fmt.Sprintf("pretty=%v/reads<=%d", pretty, maxChunk), func(t *testing.T) {
				if maxChunk == 1 && testing.Short() {
					t.Skip("slow")
				}
				r := &chunkReader{data: data, rng: rand.New(rand.NewPCG(1, uint64(maxChunk))), max: maxChunk}
				evs, errs, st, err := decode(t, r, 0)
				if err != nil || len(errs) > 0 {
					t.Fatalf("err %v, errs %v", err, errs)
				}
				if got := ids(evs); got != strings.Join(want, ",") {
					t.Errorf("got %d events, want %d", len(evs), len(want))
				}
				if st.Records != 6000 || st.Bytes != int64(len(data)) {
					t.Errorf("stats %+v, want 6000 records and %d bytes", st, len(data))
				}
			})
		}
	}
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestTruncatedGzip(t *testing.T) {
	data, want := bigLog(3000, 10, false)
	z := gz(data)
	evs, _, _, err := decode(t, bytes.NewReader(z[:len(z)/2]), 0)
	if err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("want a gzip error, got %v", err)
	}
	if len(evs) == 0 || len(evs) >= len(want) {
		t.Errorf("events before the cut should go through: got %d of %d", len(evs), len(want))
	}
}

func TestOversizedRecord(t *testing.T) {
	huge := record("big", "PutBucketEncryption", `,"pad":"`+strings.Repeat("y", 3<<20)+`"`)
	for _, layout := range []string{"compact", "lines"} {
		t.Run(layout, func(t *testing.T) {
			var in string
			if layout == "compact" {
				in = `{"Records":[` + record("a", "DeleteBucketEncryption", "") + "," + huge + "," + record("b", "DeleteBucketEncryption", "") + "]}"
			} else {
				in = record("a", "DeleteBucketEncryption", "") + "\n" + huge + "\n" + record("b", "DeleteBucketEncryption", "") + "\n"
			}
			evs, errs, _, err := decode(t, strings.NewReader(in), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if ids(evs) != "a,b" {
				t.Errorf("events %q, want a,b", ids(evs))
			}
			if len(errs) != 1 || !strings.Contains(errs[0], "larger than") {
				t.Errorf("want one size error, got %v", errs)
			}
		})
	}
}

func TestDeepNesting(t *testing.T) {
	deep := `{"eventName":"PutBucketEncryption","x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}"
	in := deep + "\n" + record("ok", "DeleteBucketEncryption", "") + "\n"
	evs, errs, _, err := decode(t, strings.NewReader(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ids(evs) != "ok" || len(errs) != 1 || !strings.Contains(errs[0], "nested") {
		t.Errorf("events %q errors %v", ids(evs), errs)
	}
}

// TestBucketKeyEnabledOnlyTrue: only JSON true and the string "true" turn
// the Bucket Key on; anything else S3 would not read as true leaves it off,
// so bucket-key-disabled is not silenced.
func TestBucketKeyEnabledOnlyTrue(t *testing.T) {
	for _, tc := range []struct {
		value   string
		on, set bool
	}{
		{`true`, true, true}, {`"true"`, true, true}, {`"tru\u0065"`, true, true},
		{`false`, false, true}, {`"false"`, false, true}, {`"TRUE"`, false, true}, {`"True"`, false, true},
		{`"t"`, false, true}, {`"1"`, false, true}, {`1`, false, true}, {`" true"`, false, true}, {`"true "`, false, true},
		{`null`, false, false}, {`{}`, false, true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			rec := `{"eventSource":"s3.amazonaws.com","eventName":"PutBucketEncryption","requestParameters":{"bucketName":"b",` +
				`"ServerSideEncryptionConfiguration":{"Rule":{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms"},"BucketKeyEnabled":` + tc.value + `}}}}`
			ev, err := ingest.DecodeRecord([]byte(rec))
			if err != nil {
				t.Fatal(err)
			}
			r := ev.Encryption.Rules[0]
			if r.BucketKeyEnabled != tc.on || r.BucketKeySet != tc.set {
				t.Errorf("BucketKeyEnabled %s: on %v set %v, want on %v set %v", tc.value, r.BucketKeyEnabled, r.BucketKeySet, tc.on, tc.set)
			}
		})
	}
}

// TestRecordsInAnotherKeyOrder: a log file whose records do not all start
// with eventVersion (tools that re-serialise CloudTrail, such as jq -S,
// write keys sorted; an attacker who can write to a source may do it to
// hide an event from the fast path) loses no event: each encryption event
// of the fixtures comes out once, whether it is written in CloudTrail's
// order or sorted, first in the file or among megabytes of other records.
func TestRecordsInAnotherKeyOrder(t *testing.T) {
	files, _ := filepath.Glob("../fixtures/records/*.json")
	var recs [][]byte
	want := map[string]int{}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil || m["eventVersion"] == nil {
			continue // envelopes, not single records
		}
		ev, err := ingest.DecodeRecord(b)
		if err != nil || !ev.IsEncryptionEvent() {
			continue
		}
		sorted, _ := json.Marshal(m) // keys sorted: eventVersion is no longer first
		recs = append(recs, sorted)
		want[ev.ID+" "+ev.Name]++
	}
	if len(recs) < 20 {
		t.Fatalf("only %d fixture records", len(recs))
	}
	noise := bytes.Repeat([]byte(`{"eventVersion":"1.08","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","eventTime":"2026-03-01T00:00:00Z","eventID":"n","requestParameters":{"pad":"`+strings.Repeat("x", 900)+`"}},`), 1)
	for _, tc := range []struct {
		name       string
		noiseEvery int // noise records between two fixtures
		noiseFirst bool
	}{
		{"sorted records only", 0, false},
		{"sorted records among CloudTrail's", 40, true},
		{"sorted record first", 1200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			b.WriteString(`{"Records":[`)
			if tc.noiseFirst {
				b.Write(noise)
			}
			for i, r := range recs {
				if i > 0 {
					b.WriteByte(',')
					for range tc.noiseEvery {
						b.Write(noise)
					}
				}
				b.Write(r)
			}
			b.WriteString(`]}`)
			got := map[string]int{}
			var bad []string
			d := ingest.Decoder{Source: "mixed", OnEvent: func(ev *ingest.Event) error { got[ev.ID+" "+ev.Name]++; return nil },
				OnError: func(pos ingest.Position, err error) { bad = append(bad, pos.String()+": "+err.Error()) }}
			if _, err := d.Decode(bytes.NewReader(b.Bytes())); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%d bytes: events %v\nwant %v", b.Len(), got, want)
			}
			if len(bad) > 0 {
				t.Errorf("reported %d errors, first %s", len(bad), bad[0])
			}
		})
	}
}

// TestBlockedEncryptionTypes: BlockedEncryptionTypes is read per rule in
// every rendering (an object, an array of objects, EncryptionType a string
// or an array), nil when a rule names none, and empty but not nil when it
// names the element without a readable value.
func TestBlockedEncryptionTypes(t *testing.T) {
	for _, tc := range []struct {
		name, blocked string
		want          []string
		ssecBlocked   bool
	}{
		{"absent", ``, nil, false},
		{"one value", `,"BlockedEncryptionTypes":{"EncryptionType":"SSE-C"}`, []string{"SSE-C"}, true},
		{"NONE", `,"BlockedEncryptionTypes":{"EncryptionType":"NONE"}`, []string{"NONE"}, false},
		{"values array", `,"BlockedEncryptionTypes":{"EncryptionType":["NONE","SSE-C"]}`, []string{"NONE", "SSE-C"}, true},
		{"array of objects", `,"BlockedEncryptionTypes":[{"EncryptionType":"NONE"},{"EncryptionType":"SSE-C"}]`, []string{"NONE", "SSE-C"}, true},
		{"lower case", `,"BlockedEncryptionTypes":{"EncryptionType":"sse-c"}`, []string{"sse-c"}, true},
		{"named, empty", `,"BlockedEncryptionTypes":{}`, []string{}, false},
		{"null", `,"BlockedEncryptionTypes":null`, nil, false},
		{"hostile nesting", `,"BlockedEncryptionTypes":[[[[[["SSE-C"]]]]]]`, []string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := `{"eventSource":"s3.amazonaws.com","eventName":"PutBucketEncryption","requestParameters":{"bucketName":"b",` +
				`"ServerSideEncryptionConfiguration":{"Rule":{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}` + tc.blocked + `}}}}`
			ev, err := ingest.DecodeRecord([]byte(rec))
			if err != nil {
				t.Fatal(err)
			}
			got := ev.Encryption.Rules[0].BlockedEncryptionTypes
			if (got == nil) != (tc.want == nil) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("BlockedEncryptionTypes %#v, want %#v", got, tc.want)
			}
			if ev.Encryption.BlocksSSEC() != tc.ssecBlocked || ev.Encryption.NamesBlocked() != (tc.want != nil) {
				t.Errorf("BlocksSSEC %v NamesBlocked %v", ev.Encryption.BlocksSSEC(), ev.Encryption.NamesBlocked())
			}
		})
	}
}

// TestKMSLifecycleEvents: AWS's documentation examples of ScheduleKeyDeletion
// and DeleteKey (an AwsServiceEvent with no caller) decode with their key,
// state and deletion date as written; a pretty-printed file, a log file and
// a LookupEvents string all find them.
func TestKMSLifecycleEvents(t *testing.T) {
	for _, tc := range []struct {
		file, name, keyID, keyARN, state, date string
		window                                 int
	}{
		{"aws-docs-kms-schedule-key-deletion.json", "ScheduleKeyDeletion", "1234abcd-12ab-34cd-56ef-1234567890ab",
			"arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "PendingDeletion", "Apr 12, 2021 18:58:30 PM", 20},
		{"aws-docs-kms-delete-key.json", "DeleteKey", "", "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "", "", 0},
	} {
		raw, err := os.ReadFile("../fixtures/records/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		json.Compact(&compact, raw)
		quoted, _ := json.Marshal(compact.String())
		for _, form := range []struct{ name, doc string }{
			{"pretty", string(raw)},
			{"log file", `{"Records":[` + compact.String() + `]}`},
			{"LookupEvents output", `{"Events":[{"EventId":"x","CloudTrailEvent":` + string(quoted) + `}]}`},
		} {
			var got []*ingest.Event
			d := ingest.Decoder{Source: tc.file, OnEvent: func(ev *ingest.Event) error { got = append(got, ev); return nil }}
			if _, err := d.Decode(strings.NewReader(form.doc)); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Errorf("%s, %s: %d events", tc.file, form.name, len(got))
				continue
			}
			k := got[0].KMS
			if !got[0].IsKMSEvent() || got[0].Name != tc.name || k.KeyID != tc.keyID || k.KeyARN != tc.keyARN || k.KeyState != tc.state ||
				k.DeletionDate != tc.date || k.PendingWindowInDays != tc.window || got[0].Bucket.Name != "" {
				t.Errorf("%s, %s: %s %+v bucket %+v", tc.file, form.name, got[0].Name, k, got[0].Bucket)
			}
		}
	}
	// Names that only look alike are not decoded.
	for _, name := range []string{"DisableKeyRotation", "EnableKeyRotation", "DeleteKeyPair", "GenerateDataKey", "CreateKey"} {
		rec := `{"Records":[{"eventVersion":"1.08","eventSource":"kms.amazonaws.com","eventName":"` + name + `","eventID":"n"}]}`
		d := ingest.Decoder{Source: name, OnEvent: func(ev *ingest.Event) error { t.Errorf("%s emitted", name); return nil }}
		st, _ := d.Decode(strings.NewReader(rec))
		if st.Candidates != 0 {
			t.Errorf("%s was decoded (%d candidates): the prefilter should have skipped it", name, st.Candidates)
		}
	}
}

// TestOpenFiles reads files through Open one after the other, so that its
// pooled buffers and gzip readers are reused: gzip and plain, one that grew
// past the size read into memory after it was listed, and a truncated one.
func TestOpenFiles(t *testing.T) {
	dir := t.TempDir()
	small, _ := bigLog(200, 10, false)
	other, _ := bigLog(50, 5, true)
	// Random bytes do not compress: the file on disk is larger than the
	// part Open reads into memory.
	rnd := rand.New(rand.NewPCG(1, 2))
	large := make([]byte, 9<<20)
	for i := range large {
		large[i] = byte(rnd.Uint32())
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	z := gz(small)
	cases := []struct {
		name    string
		in      ingest.Input
		want    []byte
		wantErr string
	}{
		{"gzip", ingest.Input{Path: write("a.json.gz", z), Size: int64(len(z))}, small, ""},
		{"plain", ingest.Input{Path: write("b.json", other), Size: int64(len(other))}, other, ""},
		{"grew", ingest.Input{Path: write("c.json.gz", gz(large)), Size: 100}, large, ""}, // listed at 100 bytes, 9 MB when read
		{"gzip again", ingest.Input{Path: write("d.json.gz", gz(other)), Size: int64(len(gz(other)))}, other, ""},
		{"truncated", ingest.Input{Path: write("e.json.gz", z[:len(z)/2]), Size: int64(len(z) / 2)}, nil, "gzip: unexpected EOF"},
		{"gzip once more", ingest.Input{Path: write("f.json.gz", z), Size: int64(len(z))}, small, ""},
	}
	for _, c := range cases {
		rc, err := ingest.Open(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: read %d bytes (err %v), want the %d written", c.name, len(got), err, len(c.want))
		}
	}
}
