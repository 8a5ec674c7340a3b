package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/encwatch/encwatch/fixtures/corpus"
	"github.com/encwatch/encwatch/ingest"
)

// benchCorpus is a generated organisation-trail corpus of about 64 MB of
// JSON (one encryption event in a thousand records), made once per run.
var benchCorpus struct {
	once     sync.Once
	dir      string
	inputs   []ingest.Input
	plain    [][]byte // decompressed files
	manifest *corpus.Manifest
	err      error
}

func loadCorpus(b *testing.B) {
	b.Helper()
	c := &benchCorpus
	c.once.Do(func() {
		c.dir, c.err = os.MkdirTemp("", "encwatch-bench-")
		if c.err != nil {
			return
		}
		c.manifest, c.err = corpus.Generate(corpus.Options{Dir: c.dir, Seed: 1, Bytes: 64 << 20})
		if c.err != nil {
			return
		}
		c.inputs, c.err = ingest.Expand([]string{filepath.Join(c.dir, "AWSLogs")})
		for _, in := range c.inputs {
			rc, err := ingest.Open(in)
			if err != nil {
				c.err = err
				return
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				c.err = err
				return
			}
			c.plain = append(c.plain, data)
		}
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
}

func TestMain(m *testing.M) {
	// No goroutine may outlive the tests (ReadAll's workers in particular).
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if benchCorpus.dir != "" {
		os.RemoveAll(benchCorpus.dir)
	}
	if dataCorpus.dir != "" {
		os.RemoveAll(dataCorpus.dir)
	}
	os.Exit(code)
}

// BenchmarkReplay is the whole read path: open, gunzip, prefilter, decode
// the candidates, in parallel over the files. MB/s counts decompressed JSON.
func BenchmarkReplay(b *testing.B) {
	loadCorpus(b)
	m := benchCorpus.manifest
	b.SetBytes(m.Bytes)
	b.ReportAllocs()
	for b.Loop() {
		st, err := ingest.ReadAll(context.Background(), benchCorpus.inputs, ingest.ReadOptions{}, func([]*ingest.Event) error { return nil })
		if err != nil || st.Events != int64(m.EncryptionEvents) {
			b.Fatalf("events %d, want %d (err %v)", st.Events, m.EncryptionEvents, err)
		}
	}
	b.ReportMetric(float64(m.Records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkGunzip is the floor: decompression alone, one core.
func BenchmarkGunzip(b *testing.B) {
	loadCorpus(b)
	b.SetBytes(benchCorpus.manifest.Bytes)
	for b.Loop() {
		for _, in := range benchCorpus.inputs {
			rc, err := ingest.Open(in)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}
	}
}

// BenchmarkDecode is the decoder on decompressed data, one core, with the
// data-event needles off and on (replay's default policy has them on).
func BenchmarkDecode(b *testing.B) {
	loadCorpus(b)
	for _, data := range []bool{false, true} {
		b.Run(fmt.Sprintf("data=%v", data), func(b *testing.B) {
			b.SetBytes(benchCorpus.manifest.Bytes)
			b.ReportAllocs()
			for b.Loop() {
				for _, plain := range benchCorpus.plain {
					d := ingest.Decoder{DataEvents: data}
					if _, err := d.Decode(bytes.NewReader(plain)); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(benchCorpus.manifest.Records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkPrefilter is the byte scan alone.
func BenchmarkPrefilter(b *testing.B) {
	loadCorpus(b)
	b.SetBytes(benchCorpus.manifest.Bytes)
	n := 0
	for b.Loop() {
		for _, data := range benchCorpus.plain {
			if ingest.MayHoldEncryptionEvent(data) {
				n++
			}
		}
	}
	if n == 0 {
		b.Fatal("prefilter matched nothing")
	}
}

// BenchmarkDecodeRecord is the full decode of one encryption record.
func BenchmarkDecodeRecord(b *testing.B) {
	raw, err := os.ReadFile("../fixtures/records/dir-put-kms-cmk.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ingest.DecodeRecord(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// dataCorpus is the bench corpus's size, with one record in five an
// ordinary PutObject data event (besides the CreateSession traffic).
var dataCorpus struct {
	once     sync.Once
	dir      string
	inputs   []ingest.Input
	manifest *corpus.Manifest
	err      error
}

// BenchmarkReplayDataEvents replays a corpus rich in data events with the
// data-event rules off (they cost only the byte scan) and on (every data
// event holding an encryption header is decoded).
func BenchmarkReplayDataEvents(b *testing.B) {
	c := &dataCorpus
	c.once.Do(func() {
		if c.dir, c.err = os.MkdirTemp("", "encwatch-bench-data-"); c.err != nil {
			return
		}
		if c.manifest, c.err = corpus.Generate(corpus.Options{Dir: c.dir, Seed: 1, Bytes: 64 << 20, DataNoiseEvery: 5, OverrideGroups: 20, CopyGroups: 20}); c.err != nil {
			return
		}
		c.inputs, c.err = ingest.Expand([]string{filepath.Join(c.dir, "AWSLogs")})
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
	for _, on := range []bool{false, true} {
		name := "rules-off"
		if on {
			name = "rules-on"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(c.manifest.Bytes)
			for b.Loop() {
				if _, err := ingest.ReadAll(context.Background(), c.inputs, ingest.ReadOptions{DataEvents: on}, func([]*ingest.Event) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.manifest.Records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
