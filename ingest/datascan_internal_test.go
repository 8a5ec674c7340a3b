package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/encwatch/encwatch/fixtures/corpus"
)

// dataSeeds are data events as AWS documents them and as the corpus
// generator writes them, one record each.
func dataSeeds(t testing.TB) [][]byte {
	var out [][]byte
	if b, err := os.ReadFile("../fixtures/records/data-events.jsonl"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
	}
	if len(out) == 0 {
		t.Fatal("no data-event fixtures")
	}
	return out
}

// FuzzDataFast: the data-event scanner and encoding/json, on the same
// bytes. Whatever the scanner accepts, decodeRecord accepts too and gives
// the same event, field for field.
func FuzzDataFast(f *testing.F) {
	for _, s := range dataSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte(`{"eventSource":"s3.amazonaws.com","eventName":"PutObject","EventName":"GetObject"}`))
	f.Add([]byte(`{"eventSource":"s3.amazonaws.com","eventName":"PutObject","requestParameters":{"Key":"a","key":"b"}}`))
	f.Add([]byte(`{"eventSource":"s3.amazonaws.com","eventName":"PutObject","requestParameters":{"x-amz-server-side-encryption":"AES256","X-Amz-Server-Side-Encryption-Customer-Algorithm":"AES256"}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, ok := decodeDataFast(raw, utf8.Valid(raw))
		if !ok {
			return
		}
		slow, err := decodeRecord(raw, DefaultMaxRules)
		if err != nil {
			t.Fatalf("the scanner accepted what encoding/json refuses (%v): %q", err, raw)
		}
		if fast == nil {
			if !slow.IsDataEvent() || slow.DataMatters() {
				t.Fatalf("the scanner dropped an event that matters: %q", raw)
			}
			return
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("the scanner and encoding/json differ on %q:\nfast %+v\njson %+v", raw, fast, slow)
		}
	})
}

// TestDataFastTakesTheCorpus: the scanner reads every data event of the
// fixtures and of a generated data-event trail but UpdateObjectEncryption
// (so the fast path is the one taken), each equal to encoding/json's, in at
// most 10 allocations.
func TestDataFastTakesTheCorpus(t *testing.T) {
	recs := dataSeeds(t)
	dir := t.TempDir()
	if _, err := corpus.Generate(corpus.Options{Dir: dir, Bytes: 2 << 20, DataNoiseEvery: 3, OverrideGroups: 3, CopyGroups: 3, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*", "*", "*", "*", "*", "*.json.gz"))
	if len(files) == 0 {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, _ error) error {
			if strings.HasSuffix(p, ".json.gz") {
				files = append(files, p)
			}
			return nil
		})
	}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		var file struct{ Records []json.RawMessage }
		if err := json.NewDecoder(zr).Decode(&file); err != nil {
			t.Fatal(err)
		}
		for _, r := range file.Records {
			recs = append(recs, r)
		}
	}
	n, taken, dropped, maxAllocs := 0, 0, 0, 0.0
	for _, raw := range recs {
		slow, err := decodeRecord(raw, DefaultMaxRules)
		if err != nil || !slow.IsDataEvent() || slow.Name == UpdateObjectEncryption {
			continue // UpdateObjectEncryption (rare) is left to encoding/json
		}
		n++
		fast, ok := decodeDataFast(raw, utf8.Valid(raw))
		if !ok {
			t.Errorf("declined a data event: %.300s", raw)
			continue
		}
		taken++
		if fast == nil {
			dropped++
			if slow.DataMatters() {
				t.Errorf("dropped an event that matters: %.300s", raw)
			}
			if a := testing.AllocsPerRun(10, func() { decodeDataFast(raw, true) }); a > 0 {
				t.Errorf("%v allocations to drop %.200s", a, raw)
			}
			continue
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("differs from encoding/json:\nfast %+v\njson %+v", fast, slow)
		}
		if true {
			a := testing.AllocsPerRun(10, func() { decodeDataFast(raw, true) })
			maxAllocs = max(maxAllocs, a)
			if a > 10 {
				t.Errorf("%v allocations for %.200s", a, raw)
			}
		}
	}
	if n < 100 || taken != n {
		t.Errorf("the scanner took %d of %d data events", taken, n)
	}
	if dropped == 0 || dropped == taken {
		t.Errorf("%d of %d data events dropped: the corpus should hold both kinds", dropped, taken)
	}
	t.Logf("%d data events read by the scanner: %d dropped (none matters to a rule) without an allocation, the others in at most %v allocations each",
		taken, dropped, maxAllocs)
}

// BenchmarkDataEvent: one data event of the fixtures, by the scanner and
// by encoding/json.
func BenchmarkDataEvent(b *testing.B) {
	recs := dataSeeds(b)
	raw := recs[0]
	for _, r := range recs {
		if ev, err := decodeRecord(r, DefaultMaxRules); err == nil && ev.Name == PutObject {
			raw = r
			break
		}
	}
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for range b.N {
			if _, ok := decodeDataFast(raw, true); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for range b.N {
			if _, err := decodeRecord(raw, DefaultMaxRules); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The most frequent case of a data-event trail: a PutObject that took
	// the bucket default, read to its end and dropped.
	var dropped []byte
	for _, r := range recs {
		if _, _, matters, ok := scanDataPrefix(r); ok && !matters {
			dropped = r
			break
		}
	}
	if dropped == nil {
		b.Fatal("no data event that matters to no rule among the seeds")
	}
	b.Run("dropped", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(dropped)))
		for range b.N {
			if n, _, matters, ok := scanDataPrefix(dropped); !ok || matters || n != len(dropped) {
				b.Fatal("not read as dropped")
			}
		}
	})
}

// decodeAll decodes b with data events on, with or without the fast
// paths, and returns what the decoder emitted and counted.
func decodeAll(b []byte, fast bool) ([]*Event, Stats, []string) {
	defer func(was bool) { fastPaths = was }(fastPaths)
	fastPaths = fast
	var evs []*Event
	var errs []string
	d := Decoder{Source: "fuzz", DataEvents: true, Limits: Limits{MaxRecordBytes: 64 << 10},
		OnEvent: func(ev *Event) error { evs = append(evs, ev); return nil },
		OnError: func(pos Position, err error) { errs = append(errs, pos.String()+": "+err.Error()) }}
	st, err := d.Decode(bytes.NewReader(b))
	if err != nil {
		errs = append(errs, "stream: "+err.Error())
	}
	return evs, st, errs
}

// FuzzFastPaths: the decoder with its shortcuts (remembered needle
// searches, the data-event scanner and its way to a record's bounds) emits
// exactly the events, positions, counts and errors it emits without them.
func FuzzFastPaths(f *testing.F) {
	var recs []string
	for _, s := range dataSeeds(f) {
		recs = append(recs, string(s))
	}
	for i := 0; i+3 <= len(recs); i += 3 {
		f.Add([]byte(`{"Records":[` + strings.Join(recs[i:i+3], ",") + `]}`))
	}
	// Record markers nested in data events (counted as records by the
	// plain way), then a record that fails, whose index tells.
	var nested []string
	for _, r := range recs[:min(3, len(recs))] {
		nested = append(nested, strings.TrimSuffix(r, "}")+`,"n":{"eventVersion":"x","y":[{"eventVersion":1}]}}`)
	}
	nested = append(nested, `{"eventVersion":"1.08","eventSource":"s3.amazonaws.com","eventName":"PutObject","additionalEventData":{"SSEApplied":"SSE_C",}}`)
	f.Add([]byte(`{"Records":[` + strings.Join(nested, ",") + `]}`))
	for _, p := range []string{"../fixtures/records/gp-put-kms-alias-name.json", "../fixtures/records/dir-put-kms-cmk.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	// Trail files as the generator writes them: data events among
	// management events, overrides, copies and re-keys.
	dir := f.TempDir()
	if _, err := corpus.Generate(corpus.Options{Dir: dir, Bytes: 120 << 10, RecordsPerFile: 10, DataNoiseEvery: 3, OverrideGroups: 2,
		CopyGroups: 2, Seed: 11}); err != nil {
		f.Fatal(err)
	}
	seeds := 0
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, _ error) error {
		if seeds < 6 && strings.HasSuffix(p, ".json.gz") {
			b, _ := os.ReadFile(p)
			if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
				var plain bytes.Buffer
				plain.ReadFrom(zr)
				f.Add(plain.Bytes())
				seeds++
			}
		}
		return nil
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		fe, fs, ferr := decodeAll(b, true)
		se, ss, serr := decodeAll(b, false)
		if fs != ss || !reflect.DeepEqual(ferr, serr) || len(fe) != len(se) {
			t.Fatalf("stats %+v / %+v, errors %q / %q, %d / %d events", fs, ss, ferr, serr, len(fe), len(se))
		}
		for i := range fe {
			if !reflect.DeepEqual(fe[i], se[i]) {
				t.Fatalf("event %d:\nfast  %+v\nplain %+v", i, fe[i], se[i])
			}
		}
	})
}

// TestIndexMain checks the one pass that finds both "Encryption" and
// "SSEApplied" against bytes.Index for each, at the edges of the search.
func TestIndexMain(t *testing.T) {
	for _, tc := range []struct {
		data    string
		lo      int
		applied bool
	}{
		{`xxSSEAppliedxxEncryption`, 0, true},
		{`xxSSEAppliedxxEncryption`, 0, false},
		{`xxSSEAppliedxxEncryption`, 3, true}, // starts before lo: not this search's
		{`SSEApplied`, 0, true},
		{`SSEApplie`, 0, true},
		{`EncryptionSSEApplied`, 0, true},
		{`Encryptio`, 0, true},
		{`ESEAppliedEEncryption`, 0, true},
		{`xEncryption`, 1, false},
		{`xEncryption`, 2, false},
		{``, 0, true},
	} {
		want := bytes.Index([]byte(tc.data[tc.lo:]), needle)
		if tc.applied {
			if j := bytes.Index([]byte(tc.data[tc.lo:]), dataNeedles[1]); j >= 0 && (want < 0 || j < want) {
				want = j
			}
		}
		if want >= 0 {
			want += tc.lo
		}
		if got := indexMain([]byte(tc.data), tc.lo, tc.applied); got != want {
			t.Errorf("indexMain(%q, %d, %v) = %d, want %d", tc.data, tc.lo, tc.applied, got, want)
		}
	}
}

// FuzzScanHelpers holds the word-at-a-time helpers of the scanner equal to
// the plain ways: cleanText to hasControl and utf8.Valid, quoteOrBackslash
// to bytes.IndexAny, isASCII to a byte loop.
func FuzzScanHelpers(f *testing.F) {
	for _, s := range []string{"", `abc"def`, `a\"b`, "\x1f", "caf\xc3\xa9\"", "\xff", strings.Repeat("x", 40) + `\`, strings.Repeat("y", 31) + `"`,
		strings.Repeat("z", 70) + "\"\\", "\x7f\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := cleanText(b), !hasControl(b) && utf8.Valid(b); got != want {
			t.Fatalf("cleanText(%q) = %v, want %v", b, got, want)
		}
		if got, want := quoteOrBackslash(b), bytes.IndexAny(b, `"\`); got != want {
			t.Fatalf("quoteOrBackslash(%q) = %d, want %d", b, got, want)
		}
		ascii := true
		for _, c := range b {
			ascii = ascii && c < 0x80
		}
		if got := isASCII(b); got != ascii {
			t.Fatalf("isASCII(%q) = %v, want %v", b, got, ascii)
		}
	})
}
