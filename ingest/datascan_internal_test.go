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
