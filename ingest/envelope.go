package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// generic reads every envelope other than the compact log file: a
// pretty-printed {"Records":[...]}, a JSON array of records, JSON lines,
// concatenated objects, a single record, LookupEvents output and
// EventBridge events. It streams: only one record is held at a time, except
// for small objects, which are read whole and looked into.
func (d *Decoder) generic() error {
	w := &d.w
	pos := w.base + int64(skipBOMAndSpace(w.data()))
	resyncing := false
	for {
		c, ok := d.peek(&pos)
		if !ok {
			return nil
		}
		var err error
		switch c {
		case '[':
			resyncing = false
			pos++
			err = d.array(&pos)
		case '{':
			resyncing = false
			err = d.object(&pos)
		default:
			// Report once, then skip lines until one starts with JSON again
			// (JSON lines with a broken line, or a file that is not JSON).
			if !resyncing {
				d.lineTo(pos)
				d.report(Position{Source: d.Source, Index: d.items, Offset: pos, Line: d.line},
					fmt.Errorf("%w: unexpected %q; skipping to the next line that starts with { or [", ErrNotJSON, rune(c)))
			}
			resyncing = true
			d.skipLine(&pos)
		}
		if err != nil {
			return err
		}
	}
}

// peek skips white space from *pos and returns the next byte, reading more
// as needed. It returns false at the end of the stream.
func (d *Decoder) peek(pos *int64) (byte, bool) {
	w := &d.w
	for {
		for *pos < w.end() {
			c := w.at(*pos)
			if !isSpace(c) {
				return c, true
			}
			*pos++
		}
		if !d.advance(*pos) {
			return 0, false
		}
	}
}

// advance counts lines up to keep, then drops the bytes before it and reads
// more.
func (d *Decoder) advance(keep int64) bool {
	d.lineTo(keep)
	return d.w.more(keep)
}

// lineTo counts newlines up to the absolute offset off.
func (d *Decoder) lineTo(off int64) {
	w := &d.w
	if off <= d.lineOff {
		return
	}
	from := max(d.lineOff, w.base)
	to := min(off, w.end())
	if to > from {
		d.line += bytes.Count(w.slice(from, to), []byte{'\n'})
	}
	d.lineOff = off
}

func (d *Decoder) skipLine(pos *int64) {
	w := &d.w
	for {
		if i := bytes.IndexByte(w.slice(*pos, w.end()), '\n'); i >= 0 {
			*pos += int64(i) + 1
			return
		}
		*pos = w.end()
		if !d.advance(*pos) {
			return
		}
	}
}

// array reads the elements of an array whose '[' is before *pos.
func (d *Decoder) array(pos *int64) error {
	for {
		c, ok := d.peek(pos)
		if !ok {
			d.report(d.here(*pos), fmt.Errorf("%w: array not closed", ErrTruncated))
			return nil
		}
		switch c {
		case ']':
			*pos++
			return nil
		case ',':
			*pos++
		case '{', '[':
			if err := d.value(pos); err != nil {
				return err
			}
		default:
			d.report(d.here(*pos), fmt.Errorf("%w: an array element starts with %q", ErrNotObject, rune(c)))
			d.skipScalar(pos)
		}
	}
}

func (d *Decoder) here(pos int64) Position {
	d.lineTo(pos)
	return Position{Source: d.Source, Index: d.items, Offset: pos, Line: d.line}
}

// skipScalar skips a string, number or literal. It always consumes at
// least one byte, so a stray '}' cannot stall the caller's loop.
func (d *Decoder) skipScalar(pos *int64) {
	w := &d.w
	if c := w.at(*pos); c == '}' || c == ',' || c == ']' {
		*pos++
		return
	}
	if w.at(*pos) == '"' {
		var sc valueScanner
		from := *pos
		for {
			if e := sc.scan(w.slice(from, w.end())); e >= 0 {
				*pos = from + int64(e)
				return
			}
			from = w.end()
			*pos = from
			if !d.advance(from) {
				return
			}
		}
	}
	for {
		for *pos < w.end() {
			c := w.at(*pos)
			if c == ',' || c == ']' || c == '}' || isSpace(c) {
				return
			}
			*pos++
		}
		if !d.advance(*pos) {
			return
		}
	}
}

// object reads a top-level object. A log file ({"Records":[...]}) or a
// LookupEvents page ({"Events":[...]}) whose first key is the array is
// streamed element by element; any other object is read whole.
func (d *Decoder) object(pos *int64) error {
	w := &d.w
	// Look at the first key: '{' ws "Records" ws ':' ws '['.
	for w.end()-*pos < 64 && d.advance(*pos) {
	}
	head := w.slice(*pos, w.end())
	if key, rest, ok := firstKey(head); ok && (key == "Records" || key == "Events") {
		*pos += int64(len(head) - len(rest))
		if err := d.array(pos); err != nil {
			return err
		}
		// Skip the rest of the enclosing object.
		sc := valueScanner{depth: 1}
		from := *pos
		for {
			if e := sc.scan(w.slice(from, w.end())); e >= 0 {
				*pos = from + int64(e)
				return nil
			}
			from = w.end()
			*pos = from
			if !d.advance(from) {
				d.report(d.here(*pos), fmt.Errorf("%w: object not closed", ErrTruncated))
				return nil
			}
		}
	}
	return d.value(pos)
}

// firstKey parses `{ "key" : [` at the start of b and returns the key and
// the bytes after '['.
func firstKey(b []byte) (string, []byte, bool) {
	i := 1
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i >= len(b) || b[i] != '"' {
		return "", nil, false
	}
	j := bytes.IndexByte(b[i+1:], '"')
	if j < 0 {
		return "", nil, false
	}
	key := string(b[i+1 : i+1+j])
	k := i + 2 + j
	for k < len(b) && isSpace(b[k]) {
		k++
	}
	if k >= len(b) || b[k] != ':' {
		return "", nil, false
	}
	k++
	for k < len(b) && isSpace(b[k]) {
		k++
	}
	if k >= len(b) || b[k] != '[' {
		return "", nil, false
	}
	return key, b[k+1:], true
}

// value reads one object or array starting at *pos, bounded by the record
// size limit, and hands it to item.
func (d *Decoder) value(pos *int64) error {
	w := &d.w
	start := *pos
	p := d.here(start)
	sc := valueScanner{maxDepth: d.Limits.MaxNesting}
	from := start
	for {
		if e := sc.scan(w.slice(from, w.end())); e >= 0 {
			end := from + int64(e)
			*pos = end
			d.items++
			if sc.tooDeep {
				d.stats.Records++
				d.report(p, fmt.Errorf("%w: deeper than %d levels, skipped", ErrTooDeep, d.Limits.MaxNesting))
				return nil
			}
			if end-start > int64(d.maxRecord()) {
				d.stats.Records++
				d.report(p, fmt.Errorf("%w: %d bytes, larger than %d, skipped", ErrTooLarge, end-start, d.maxRecord()))
				return nil
			}
			return d.item(w.slice(start, end), p, 0)
		}
		from = w.end()
		if from-start > int64(d.maxRecord()) {
			return d.discard(pos, &sc, p)
		}
		if !d.advance(start) {
			*pos = w.end()
			d.items++
			if w.eof || w.err != nil {
				d.report(p, fmt.Errorf("%w: the record is cut off at the end of the input", ErrTruncated))
			}
			return nil
		}
	}
}

// discard skips the rest of a value that is larger than the record limit.
func (d *Decoder) discard(pos *int64, sc *valueScanner, p Position) error {
	w := &d.w
	d.items++
	d.stats.Records++
	d.report(p, fmt.Errorf("%w: larger than %d bytes, skipped", ErrTooLarge, d.maxRecord()))
	for {
		from := w.end()
		if !d.advance(from) {
			*pos = w.end()
			return nil
		}
		if e := sc.scan(w.slice(from, w.end())); e >= 0 {
			*pos = from + int64(e)
			return nil
		}
	}
}

// probe tells the envelopes apart by their keys.
type probe struct {
	Records         json.RawMessage `json:"Records"`
	Events          json.RawMessage `json:"Events"`
	CloudTrailEvent *string         `json:"CloudTrailEvent"`
	Detail          json.RawMessage `json:"detail"`
	DetailType      text            `json:"detail-type"`
	EventSource     text            `json:"eventSource"`
	EventName       text            `json:"eventName"`
}

// item handles one JSON value held in memory: a record, or an envelope
// holding records.
func (d *Decoder) item(raw []byte, pos Position, nested int) error {
	if !d.contains(raw) {
		d.stats.Records++
		if !json.Valid(raw) {
			var v any
			d.report(pos, describeJSONError(raw, json.Unmarshal(raw, &v)))
		}
		return nil
	}
	if raw[0] != '{' {
		if nested == 0 && raw[0] == '[' {
			return d.elements(raw, pos, nested)
		}
		d.stats.Records++
		d.report(pos, ErrNotObject)
		return nil
	}
	var p probe
	if err := json.Unmarshal(raw, &p); err != nil {
		d.stats.Records++
		d.report(pos, describeJSONError(raw, err))
		return nil
	}
	// Envelopes first: encoding/json matches keys case-insensitively, so a
	// LookupEvents element's EventSource would pass for eventSource.
	switch {
	case p.CloudTrailEvent != nil:
		d.stats.Records++
		return d.record([]byte(*p.CloudTrailEvent), pos)
	case len(p.Detail) > 0 && p.DetailType != "":
		d.stats.Records++
		return d.record(p.Detail, pos)
	case p.EventSource != "" || p.EventName != "":
		d.stats.Records++
		return d.record(raw, pos)
	case len(p.Records) > 0 && nested < 2:
		return d.elements(p.Records, pos, nested)
	case len(p.Events) > 0 && nested < 2:
		return d.elements(p.Events, pos, nested)
	}
	d.stats.Records++
	d.report(pos, fmt.Errorf("%w: no eventSource, Records, Events, CloudTrailEvent or detail", ErrUnknownShape))
	return nil
}

// elements handles the elements of an in-memory array.
func (d *Decoder) elements(raw json.RawMessage, pos Position, nested int) error {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		d.stats.Records++
		d.report(pos, fmt.Errorf("records array: %w", describeJSONError(raw, err)))
		return nil
	}
	for i, e := range elems {
		p := pos
		p.Index = pos.Index + i
		if err := d.item(bytes.TrimSpace(e), p, nested+1); err != nil {
			return err
		}
	}
	return nil
}
