package ingest

import (
	"bytes"
	"fmt"
)

// firstElement returns the offset in the window of the first element of
// a {"Records":[...]} document that starts at start.
func (d *Decoder) firstElement(start int) (int, bool) {
	data := d.w.data()
	if !bytes.HasPrefix(data[start:], compactPrefix) {
		return 0, false
	}
	i := start + len(compactPrefix)
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i, true
}

// offLayout handles a match that no record marker leads to: a record whose
// keys are not in CloudTrail's order, which tools that re-serialise logs
// write, and which an attacker who can write to a source may write on
// purpose to hide an event from the fast path. It walks the Records array
// element by element from anchor (the last record that starts with a
// marker, or -1 for the array's first element) to the element that holds
// hit, and judges that element. It returns done when the decode must end
// (with its error), and otherwise sets *search for the next match.
func (d *Decoder) offLayout(hit, anchor int64, search *int64, counted int64) (error, bool) {
	w := &d.w
	marked := anchor >= 0 // the anchor's marker counted it
	if anchor < 0 {
		first, ok := -1, false
		if w.base == 0 {
			var f int
			f, ok = d.firstElement(skipBOMAndSpace(w.data()))
			first = f
		}
		if !ok {
			d.report(Position{Source: d.Source, Offset: hit}, fmt.Errorf("%w: a match lies outside any record", ErrLayout))
			*search = hit + 1
			return nil, false
		}
		anchor = int64(first)
	}
	for pos := anchor; ; {
		var sc valueScanner
		rel := int(pos - w.base)
		end := sc.scan(w.data()[rel:])
		if end < 0 {
			*search = hit
			if w.more(min(anchor, counted)) {
				return nil, false
			}
			if w.eof || w.err != nil {
				d.report(Position{Source: d.Source, Offset: pos}, fmt.Errorf("%w: the record is cut off at the end of the input", ErrTruncated))
				return nil, true
			}
			d.report(Position{Source: d.Source, Offset: pos}, fmt.Errorf("%w: larger than %d bytes, skipped", ErrTooLarge, d.maxRecord()))
			*search = w.end()
			w.more(w.end())
			return nil, false
		}
		endAbs := pos + int64(end)
		if (pos != anchor || !marked) && pos >= d.walked {
			// A record no marker counted (the anchor was).
			d.stats.Records++
			d.walked = endAbs
		}
		if endAbs > hit {
			if endAbs-pos > int64(d.maxRecord()) {
				d.report(Position{Source: d.Source, Offset: pos}, fmt.Errorf("%w: %d bytes, larger than %d, skipped", ErrTooLarge, endAbs-pos, d.maxRecord()))
			} else if err := d.record(w.slice(pos, endAbs), Position{Source: d.Source, Offset: pos}); err != nil {
				return err, true
			}
			*search = endAbs
			return nil, false
		}
		// Past the separator to the next element.
		next := endAbs
		for next < w.end() && (isSpace(w.at(next)) || w.at(next) == ',') {
			next++
		}
		if next >= w.end() || w.at(next) == ']' || next <= pos {
			d.report(Position{Source: d.Source, Offset: hit}, fmt.Errorf("%w: a match lies outside any record", ErrLayout))
			*search = hit + 1
			return nil, false
		}
		pos = next
	}
}
