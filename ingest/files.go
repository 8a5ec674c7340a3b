package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// Stdin is the path that names standard input.
const Stdin = "-"

// Input is one file (or standard input) to read.
type Input struct {
	Path string
	Size int64 // on disk; 0 for stdin
	// Reader, when set, is read instead of opening Path (standard input:
	// the command hands its own, so it can run in-process).
	Reader io.Reader
}

// logName matches CloudTrail's log file names and captures their time:
// ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHmmZ_UNIQUE.json.gz
var logName = regexp.MustCompile(`_CloudTrail_[a-z0-9-]+_(\d{8}T\d{4}Z)_[A-Za-z0-9]+\.json`)

// IsLogFolderToSkip reports whether a folder holds no event logs
// (CloudTrail-Digest, CloudTrail-Insight).
func IsLogFolderToSkip(name string) bool {
	return name == "CloudTrail-Digest" || name == "CloudTrail-Insight"
}

// SkipKey reports whether an S3 key or path is a digest or Insights object
// rather than an event log.
func SkipKey(key string) bool {
	key = filepath.ToSlash(key)
	return strings.Contains(key, "/CloudTrail-Digest/") || strings.Contains(key, "/CloudTrail-Insight/") ||
		strings.HasPrefix(key, "CloudTrail-Digest/") || strings.HasPrefix(key, "CloudTrail-Insight/")
}

// Expand turns paths (files, folders, "-") into the inputs to read, in the
// order events should be judged: by the delivery time in CloudTrail's file
// name where there is one, then by path. Folders are walked recursively,
// skipping CloudTrail-Digest and CloudTrail-Insight folders and hidden files.
// A path that does not exist is an error.
func Expand(paths []string) ([]Input, error) {
	var out []Input
	for _, p := range paths {
		if p == Stdin {
			out = append(out, Input{Path: Stdin})
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, Input{Path: p, Size: st.Size()})
			continue
		}
		err = filepath.WalkDir(p, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := e.Name()
			if e.IsDir() {
				if path != p && (IsLogFolderToSkip(name) || strings.HasPrefix(name, ".")) {
					return filepath.SkipDir
				}
				return nil
			}
			if strings.HasPrefix(name, ".") || !e.Type().IsRegular() || !isDataFile(name) {
				return nil
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			out = append(out, Input{Path: path, Size: info.Size()})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := deliveryTime(out[i].Path), deliveryTime(out[j].Path)
		if ti != tj {
			return ti < tj
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// isDataFile keeps JSON and gzip files when walking folders, so that READMEs
// and licences beside recorded data are not read as input.
func isDataFile(name string) bool {
	n := strings.ToLower(name)
	for _, ext := range []string{".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".gz"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

func deliveryTime(path string) string {
	if m := logName.FindStringSubmatch(filepath.Base(path)); m != nil {
		return m[1]
	}
	return ""
}

// Open opens an input for reading, decompressing gzip (recognised by its
// magic bytes, not its name). A file of at most wholeFileMax bytes is read
// into memory first: inflating from a byte slice is a few per cent faster
// than through a bufio.Reader, and its buffer and gzip reader are reused.
func Open(in Input) (io.ReadCloser, error) {
	var f io.ReadCloser
	switch {
	case in.Reader != nil:
		f = io.NopCloser(in.Reader)
	case in.Path == Stdin:
		f = io.NopCloser(os.Stdin)
	default:
		var err error
		if f, err = os.Open(in.Path); err != nil {
			return nil, err
		}
		if in.Size > 0 && in.Size <= wholeFileMax {
			return openWhole(in, f)
		}
	}
	r, release, err := Decompress(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", in.Path, err)
	}
	return &readCloser{Reader: r, close: func() error { release(); return f.Close() }}, nil
}

// wholeFileMax bounds the files Open reads into memory at once (one per
// worker); larger ones are streamed.
const wholeFileMax = 8 << 20

var filePool = sync.Pool{New: func() any { return new([]byte) }}

// openWhole reads the file f of in into a pooled buffer and decompresses
// from it. A file that grew past wholeFileMax since it was listed is read
// on from where the buffer stops.
func openWhole(in Input, f io.ReadCloser) (io.ReadCloser, error) {
	bp := filePool.Get().(*[]byte)
	buf := (*bp)[:0]
	if cap(buf) < int(in.Size)+1 {
		buf = make([]byte, 0, in.Size+1)
	}
	for len(buf) <= wholeFileMax {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			putFile(bp, buf)
			return nil, fmt.Errorf("%s: %w", in.Path, err)
		}
	}
	var src io.Reader = bytes.NewReader(buf)
	if len(buf) > wholeFileMax {
		src = io.MultiReader(src, f)
	}
	r, release, err := Decompress(src)
	done := func() error { release(); putFile(bp, buf); return f.Close() }
	if err != nil {
		done()
		return nil, fmt.Errorf("%s: %w", in.Path, err)
	}
	return &readCloser{Reader: r, close: done}, nil
}

func putFile(bp *[]byte, buf []byte) {
	if cap(buf) <= wholeFileMax+1 {
		*bp = buf[:0]
		filePool.Put(bp)
	}
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

var gzipPool sync.Pool

// Decompress returns a reader of r's content, gunzipped when r starts with
// the gzip magic bytes (concatenated gzip members are read in turn), and a
// function that hands its gzip reader back for reuse once the caller is
// done with the reader.
func Decompress(r io.Reader) (io.Reader, func(), error) {
	var br interface {
		io.Reader
		io.ByteReader
	}
	var head []byte
	var err error
	if b, ok := r.(*bytes.Reader); ok {
		var h [2]byte
		n, rerr := b.ReadAt(h[:], b.Size()-int64(b.Len()))
		head, err, br = h[:n], rerr, b
	} else {
		bb := bufio.NewReaderSize(r, 64<<10)
		head, err = bb.Peek(2)
		br = bb
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nop, err
	}
	if len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, _ := gzipPool.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		if err := zr.Reset(br); err != nil {
			gzipPool.Put(zr)
			return nil, nop, fmt.Errorf("gzip: %w", err)
		}
		return &gzipReader{zr: zr}, func() { gzipPool.Put(zr) }, nil
	}
	return br, nop, nil
}

func nop() {}

// gzipReader names gzip failures as such, so a truncated file reads as
// "gzip: unexpected EOF" rather than a bare EOF.
type gzipReader struct{ zr *gzip.Reader }

func (g *gzipReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("gzip: %w", err)
	}
	return n, err
}
