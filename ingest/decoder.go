package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"
)

// DefaultMaxRecordBytes bounds one record. CloudTrail records are at most a
// few hundred KB; anything far larger is hostile or broken.
const DefaultMaxRecordBytes = 8 << 20

const chunkSize = 1 << 20

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// Stats counts what one decode saw.
type Stats struct {
	Bytes      int64 // decompressed bytes read
	Records    int64 // records seen (counted, not decoded, when skipped)
	Candidates int64 // records that passed the prefilter and were decoded
	Events     int64 // encryption events emitted
	Errors     int64 // records or inputs that could not be read
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Bytes += o.Bytes
	s.Records += o.Records
	s.Candidates += o.Candidates
	s.Events += o.Events
	s.Errors += o.Errors
}

// Decoder reads one stream of CloudTrail data in any envelope and emits its
// encryption events. A Decoder is used for one stream at a time.
type Decoder struct {
	// Source names the stream in positions and errors (file path, S3 key).
	Source string
	// Limits bound hostile input (zero fields: defaults).
	Limits Limits
	// OnEvent receives each encryption event, in stream order. An error
	// stops the decode and is returned.
	OnEvent func(*Event) error
	// OnError receives each record or part of the input that could not be
	// read; the decode goes on after it.
	OnError func(pos Position, err error)
	// DataEvents also emits the data events that can set or move an
	// object's encryption (PutObject, CopyObject, ...). Off, they cost only
	// the byte scan.
	DataEvents bool

	stats   Stats
	w       window
	stopErr error
	lineOff int64 // newlines are counted up to this absolute offset
	line    int   // 1-based line at lineOff
	items   int   // items seen by the generic path
	walked  int64 // elements without a record marker are counted up to here
	memo    needles
}

// Decode reads r to its end. It returns the stats and an error only when
// the stream itself failed (a read error, a truncated gzip, or OnEvent's
// error); bad records are reported through OnError and counted.
func (d *Decoder) Decode(r io.Reader) (Stats, error) {
	d.stats = Stats{}
	d.Limits = d.Limits.withDefaults()
	max := d.Limits.MaxRecordBytes
	r = &capped{r: r, left: d.Limits.MaxInputBytes, max: d.Limits.MaxInputBytes}
	bp := chunkPool.Get().(*[]byte)
	d.w = window{r: r, buf: *bp, max: max + chunkSize}
	d.lineOff, d.line, d.items, d.walked = 0, 1, 0, 0
	d.memo = needles{}
	defer func() {
		if len(d.w.buf) == chunkSize {
			*bp = d.w.buf
		}
		chunkPool.Put(bp)
		d.w = window{}
	}()
	var err error
	d.w.more(0)
	start := skipBOMAndSpace(d.w.data())
	if first, ok := d.firstElement(start); ok && bytes.HasPrefix(d.w.data()[first:], recordMarker) {
		err = d.compact()
	} else {
		err = d.generic()
	}
	d.stats.Bytes = d.w.base + int64(d.w.n)
	if err == nil && d.w.err != nil {
		err = d.w.err
	}
	if err != nil && !errors.Is(err, errStop) {
		d.stats.Errors++
	}
	if errors.Is(err, errStop) {
		err = d.stopErr
	}
	return d.stats, err
}

var errStop = errors.New("stopped")

// fastPaths turns on the compact path's shortcuts (remembered needle
// searches, the data-event scanner); tests turn them off to compare with
// the plain way.
var fastPaths = true

func (d *Decoder) report(pos Position, err error) {
	d.stats.Errors++
	if d.OnError != nil {
		d.OnError(pos, err)
	}
}

func skipBOMAndSpace(b []byte) int {
	i := 0
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
		i = 3
	}
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// window is a sliding buffer over the stream. Offsets are absolute.
type window struct {
	r    io.Reader
	buf  []byte
	n    int   // valid bytes in buf[:n]
	base int64 // absolute offset of buf[0]
	eof  bool
	err  error
	max  int
}

func (w *window) data() []byte { return w.buf[:w.n] }

func (w *window) end() int64 { return w.base + int64(w.n) }

// at returns the byte at absolute offset off, which must be in the window.
func (w *window) at(off int64) byte { return w.buf[off-w.base] }

// slice returns the bytes between absolute offsets.
func (w *window) slice(from, to int64) []byte { return w.buf[from-w.base : to-w.base] }

// more drops the bytes before the absolute offset keep and reads more. It
// returns false when nothing more can be read (end of stream, read error,
// or the kept bytes already fill the largest buffer allowed).
func (w *window) more(keep int64) bool {
	if w.eof || w.err != nil {
		return false
	}
	if k := int(keep - w.base); k > 0 {
		if k > w.n {
			k = w.n
		}
		copy(w.buf, w.buf[k:w.n])
		w.n -= k
		w.base += int64(k)
	}
	if w.n == len(w.buf) {
		if len(w.buf) >= w.max {
			return false
		}
		nb := make([]byte, min(2*len(w.buf), w.max))
		copy(nb, w.buf[:w.n])
		w.buf = nb
	}
	got := 0
	for w.n < len(w.buf) {
		m, err := w.r.Read(w.buf[w.n:])
		w.n += m
		got += m
		if err == io.EOF {
			w.eof = true
			break
		}
		if err != nil {
			w.err = err
			break
		}
	}
	return got > 0
}

// compact reads a CloudTrail log file as CloudTrail writes it. It searches
// the decompressed bytes for the needle only; around each match it finds
// the record (backwards to the record marker, forwards by nesting) and
// decodes that record alone. Records without a match are counted by their
// marker and never looked at.
func (d *Decoder) compact() error {
	w := &d.w
	var search, counted int64 // absolute offsets: next needle search, markers counted up to
	for {
		data := w.data()
		h := -1
		if rel := int(search - w.base); rel < len(data) {
			i := -1
			if fastPaths {
				i = d.indexAt(search, data[rel:])
			} else {
				i = d.index(data[rel:])
			}
			if i >= 0 {
				h = rel + i
			}
		}
		if h < 0 {
			// No match in what is buffered: count the records, keep the last
			// (possibly partial) record and read on.
			limit := w.end() - int64(len(recordMarker)) + 1
			d.countMarkers(&counted, limit)
			search = max(search, w.end()-int64(maxNeedle)+1)
			keep := min(search, counted)
			if last := bytes.LastIndex(data, recordMarker); last >= 0 {
				keep = min(keep, w.base+int64(last))
			}
			if !w.more(keep) {
				if w.n == len(w.buf) && !w.eof && w.err == nil {
					// Nothing fits any more: a record larger than the limit.
					d.report(Position{Source: d.Source, Offset: keep}, fmt.Errorf("%w: larger than %d bytes, skipped", ErrTooLarge, d.maxRecord()))
					search, counted = w.end(), w.end()
					w.more(w.end())
					continue
				}
				return nil
			}
			continue
		}
		hit := w.base + int64(h)
		if d.DataEvents && fastPaths {
			if end := d.dataRecord(data, search, h, &counted); end > 0 {
				search = end
				continue
			}
			if d.stopErr != nil {
				return errStop
			}
		}
		startRel := bytes.LastIndex(data[:h], recordMarker)
		if startRel < 0 {
			if next, done := d.offLayout(hit, -1, &search, counted); done {
				return next
			}
			continue
		}
		start := w.base + int64(startRel)
		d.countMarkers(&counted, start+1)
		index := int(d.stats.Records - 1)
		var sc valueScanner
		end := sc.scan(data[startRel:])
		if end < 0 {
			// The record goes on past the buffer: keep it, read on, and
			// search again from this match.
			search = hit
			if !w.more(min(start, counted)) {
				if w.eof || w.err != nil {
					d.report(Position{Source: d.Source, Index: index, Offset: start}, fmt.Errorf("%w: the record is cut off at the end of the input", ErrTruncated))
					return nil
				}
				d.report(Position{Source: d.Source, Index: index, Offset: start}, fmt.Errorf("%w: larger than %d bytes, skipped", ErrTooLarge, d.maxRecord()))
				search, counted = w.end(), w.end()
				w.more(w.end())
			}
			continue
		}
		endAbs := start + int64(end)
		if endAbs <= hit {
			// The match is in a later record that does not start with
			// eventVersion (keys in another order than CloudTrail's).
			if next, done := d.offLayout(hit, start, &search, counted); done {
				return next
			}
			continue
		}
		if endAbs-start > int64(d.maxRecord()) {
			d.report(Position{Source: d.Source, Index: index, Offset: start},
				fmt.Errorf("%w: %d bytes, larger than %d, skipped", ErrTooLarge, endAbs-start, d.maxRecord()))
		} else if err := d.record(w.slice(start, endAbs), Position{Source: d.Source, Index: index, Offset: start}); err != nil {
			return err
		}
		search = endAbs
	}
}

func (d *Decoder) maxRecord() int { return d.Limits.MaxRecordBytes }

// forwardSpan is the distance from the last match up to which dataRecord
// searches forward for the record's start; beyond it, backward.
const forwardSpan = 16 << 10

// dataRecord is the compact path's way for data-event trails, where a
// third of the records or more match a data needle: the record holding the
// match at h is found by searching forward for the last record marker
// before h (from the last record counted, so that the same search counts
// the records in between; backwards when h is more than forwardSpan past
// search), and its end by the data-event scanner, which reads it at the
// same time (no value scan, no second pass for an event that matters to no
// rule) and counts the markers nested in it. It returns the absolute end
// of the record read, or 0 when the usual way must be taken (the record
// starts before search, or is not a data event the scanner reads).
func (d *Decoder) dataRecord(data []byte, search int64, h int, counted *int64) int64 {
	w := &d.w
	i := int(search - w.base)
	if i < 0 || i > h {
		return 0
	}
	start, markers := -1, int64(-1)
	switch from := int(max(*counted, w.base) - w.base); {
	case h-i > forwardSpan:
		// A match far from the last one (a trail of management events):
		// searching forward would be one more pass over everything.
		if j := bytes.LastIndex(data[i:h], recordMarker); j >= 0 {
			start = i + j
		}
	case from <= i:
		// The records between the last one counted and this one are
		// counted by the same search that finds this one's start.
		var n int
		start, n = lastMarker(data, from, h)
		if start < i {
			return 0 // the record holding the match began before search
		}
		markers = int64(n)
	default:
		start, _ = lastMarker(data, i, h)
	}
	if start < 0 {
		return 0
	}
	n, nested, matters, ok := scanDataPrefix(data[start:])
	if !ok || start+n <= h || n > d.maxRecord() {
		return 0
	}
	raw := data[start : start+n]
	abs := w.base + int64(start)
	if markers >= 0 {
		// This record's own markers were counted by the scanner: the next
		// search starts at its end, not again at its start.
		d.stats.Records += markers
		*counted = abs + int64(n)
	} else {
		d.countMarkers(counted, abs+1)
		nested = 0
	}
	pos := Position{Source: d.Source, Index: int(d.stats.Records - 1), Offset: abs}
	d.stats.Records += int64(nested)
	switch clean := cleanText(raw); {
	case clean && !matters:
		d.stats.Candidates++ // read, and it matters to no rule
	case clean:
		d.stats.Candidates++
		ev, _, _, _, ok := scanData(raw, string(raw), true)
		if ok && ev != nil {
			if d.emit(ev, pos) != nil {
				return 0 // d.stopErr says why
			}
			break
		}
		d.stats.Candidates--
		fallthrough
	default:
		if d.record(raw, pos) != nil {
			return 0
		}
	}
	return abs + int64(n)
}

// lastMarker returns where the last record marker in data[from:to] starts
// (-1: none) and how many there are, searching forward.
func lastMarker(data []byte, from, to int) (last, n int) {
	last = -1
	for {
		j := bytes.Index(data[from:to], recordMarker)
		if j < 0 {
			return last, n
		}
		last = from + j
		from = last + len(recordMarker)
		n++
	}
}

// countMarkers counts the records that start in [*from, to).
func (d *Decoder) countMarkers(from *int64, to int64) {
	if to <= *from {
		return
	}
	w := &d.w
	a := *from
	if a < w.base {
		a = w.base
	}
	b := min(to+int64(len(recordMarker))-1, w.end())
	if b > a {
		d.stats.Records += int64(bytes.Count(w.slice(a, b), recordMarker))
	}
	*from = to
}

// record handles one raw record of the compact path.
func (d *Decoder) record(raw []byte, pos Position) error {
	d.stats.Candidates++
	valid := utf8.Valid(raw)
	if !valid {
		// Judged all the same (invalid bytes read as U+FFFD), but reported.
		d.report(pos, ErrInvalidUTF8)
	}
	if d.DataEvents && fastPaths {
		if ev, ok := decodeDataFast(raw, valid); ok {
			if ev == nil {
				return nil // a data event that matters to no rule
			}
			return d.emit(ev, pos)
		}
	}
	ev, err := decodeRecord(raw, d.Limits.MaxRules)
	if err != nil {
		d.report(pos, err)
		return nil
	}
	if ev.Encryption.Dropped > 0 {
		d.report(pos, fmt.Errorf("%w: %d judged, %d more not", ErrTooManyRules, len(ev.Encryption.Rules), ev.Encryption.Dropped))
	}
	return d.emit(ev, pos)
}

func (d *Decoder) emit(ev *Event, pos Position) error {
	if !ev.IsEncryptionEvent() && !ev.IsKMSEvent() && !(d.DataEvents && ev.IsDataEvent() && ev.DataMatters()) {
		return nil
	}
	ev.Origin = pos
	d.stats.Events++
	if d.OnEvent != nil {
		if err := d.OnEvent(ev); err != nil {
			d.stopErr = err
			return errStop
		}
	}
	return nil
}
