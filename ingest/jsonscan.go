package ingest

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// fastScan is the data-event scanner's cursor over one record: b the
// bytes, s the same as one string (the events' strings are its
// substrings).
type fastScan struct {
	b []byte
	s string
	i int
	// markers counts the objects below the top one that start with the
	// record marker ({"eventVersion":), the only way its bytes can appear
	// inside a record that is valid JSON (in a string its quote would be
	// escaped).
	markers int
}

// maxFastDepth bounds the nesting the scanner follows; deeper records go to
// encoding/json (and the decoder's nesting limit).
const maxFastDepth = 64

func (f *fastScan) ws() {
	if f.i < len(f.b) && f.b[f.i] > ' ' {
		return // compact JSON, as CloudTrail writes it
	}
	for f.i < len(f.b) {
		switch f.b[f.i] {
		case ' ', '\t', '\n', '\r':
			f.i++
		default:
			return
		}
	}
}

func (f *fastScan) peek() byte {
	f.ws()
	if f.i < len(f.b) {
		return f.b[f.i]
	}
	return 0
}

// null consumes a null and reports whether there was one.
func (f *fastScan) null() bool {
	if f.peek() == 'n' && strings.HasPrefix(f.s[f.i:], "null") {
		f.i += 4
		return true
	}
	return false
}

// str reads a string without escapes and returns it (a substring of s).
// The record holds no control byte (hasControl), so only a backslash
// before the closing quote declines it.
func (f *fastScan) str() (string, bool) {
	if f.peek() != '"' {
		return "", false
	}
	start := f.i + 1
	j := quoteOrBackslash(f.b[start:])
	if j < 0 || f.b[start+j] != '"' {
		return "", false
	}
	f.i = start + j + 1
	return f.s[start : start+j], true
}

// quoteOrBackslash returns the offset of the first '"' or '\\' in b, or -1.
// Most strings of a record are short (keys, names, times): their first
// bytes are tested eight at a time, without the cost of a call to
// bytes.IndexByte, which takes over for the long ones (tokens, agents).
func quoteOrBackslash(b []byte) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	const quotes, backslashes = 0x2222222222222222, 0x5c5c5c5c5c5c5c5c
	i := 0
	for ; i+8 <= len(b) && i < 32; i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		q, s := w^quotes, w^backslashes
		// A zero byte of q or s is a quote or a backslash; the lowest byte
		// flagged is always a true one (a borrow flags only higher bytes).
		if m := ((q-lo)&^q | (s-lo)&^s) & hi; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	if i < 32 {
		for ; i < len(b); i++ {
			if b[i] == '"' || b[i] == '\\' {
				return i
			}
		}
		return -1
	}
	end := len(b)
	if q := bytes.IndexByte(b[i:], '"'); q >= 0 {
		end = i + q
	}
	if e := bytes.IndexByte(b[i:end], '\\'); e >= 0 {
		return i + e
	}
	if end == len(b) {
		return -1
	}
	return end
}

// text reads a value into a text field: a string without escapes, or null
// (""). Numbers and booleans, which text keeps as written, are declined.
func (f *fastScan) text(t *text) bool {
	if f.null() {
		*t = ""
		return true
	}
	v, ok := f.str()
	*t = text(v)
	return ok
}

// scalar reads a value as the scalar function does: a string, null (""),
// or an array whose first element is a string (the rest skipped).
func (f *fastScan) scalar(out *string) bool {
	switch f.peek() {
	case 'n':
		*out = ""
		return f.null()
	case '[':
		first, got := "", false
		if !f.array(3, func() bool {
			if got {
				return f.skip(4)
			}
			got = true
			var ok bool
			first, ok = f.str()
			return ok
		}) {
			return false
		}
		*out = first
		return true
	}
	v, ok := f.str()
	*out = v
	return ok
}

// fieldNames are the keys an object's reader asks for, grouped by length
// so that each key of the record is compared with the few of its length
// only.
type fieldNames struct {
	list  []string
	byLen [maxFieldName + 1][]uint8
}

// maxFieldName is the longest name a fieldNames can hold.
const maxFieldName = 63

func newFieldNames(list ...string) *fieldNames {
	fn := &fieldNames{list: list}
	for i, n := range list {
		if len(n) > maxFieldName || i > 63 {
			panic("ingest: field name too long, or too many names: " + n)
		}
		fn.byLen[len(n)] = append(fn.byLen[len(n)], uint8(i))
	}
	return fn
}

// candidates returns the indices of the names as long as key.
func (fn *fieldNames) candidates(key string) []uint8 {
	if fn == nil || len(key) > maxFieldName {
		return nil
	}
	return fn.byLen[len(key)]
}

// object reads an object. For each key among names (compared
// case-insensitively when lowered: the map keys of requestParameters and
// responseElements, which encwatch lowers), it calls field with the name;
// other keys' values are skipped. A key with an escape or a non-ASCII
// byte, one of names twice, or (not lowered: a struct, whose fields
// encoding/json matches case-insensitively) a key equal to one of names
// only case-insensitively, is declined.
func (f *fastScan) object(depth int, names *fieldNames, lowered bool, field func(key string) bool) bool {
	if depth > maxFastDepth || f.peek() != '{' {
		return false
	}
	if depth > 0 && strings.HasPrefix(f.s[f.i:], `{"eventVersion":`) {
		f.markers++
	}
	f.i++
	if f.peek() == '}' {
		f.i++
		return true
	}
	var seen uint64
	for {
		start := f.i + 1
		key, ok := f.str()
		if !ok || !isASCII(f.b[start:start+len(key)]) {
			return false
		}
		if f.peek() != ':' {
			return false
		}
		f.i++
		idx := -1
		cands := names.candidates(key)
		for _, n := range cands {
			if name := names.list[n]; key == name || lowered && strings.EqualFold(key, name) {
				idx = int(n)
				key = name
				break
			}
		}
		switch {
		case idx >= 0:
			if seen&(1<<idx) != 0 {
				return false
			}
			seen |= 1 << idx
			if !field(key) {
				return false
			}
		default:
			if !lowered {
				for _, n := range cands {
					if strings.EqualFold(key, names.list[n]) {
						return false
					}
				}
			}
			if !f.skip(depth + 1) {
				return false
			}
		}
		switch f.peek() {
		case ',':
			f.i++
		case '}':
			f.i++
			return true
		default:
			return false
		}
	}
}

// isASCII reports whether b holds only ASCII bytes, eight at a time.
func isASCII(b []byte) bool {
	var acc uint64
	i := 0
	for ; i+8 <= len(b); i += 8 {
		acc |= binary.LittleEndian.Uint64(b[i:])
	}
	for ; i < len(b); i++ {
		acc |= uint64(b[i])
	}
	return acc&0x8080808080808080 == 0
}

// array reads an array, calling elem for each element.
func (f *fastScan) array(depth int, elem func() bool) bool {
	if depth > maxFastDepth || f.peek() != '[' {
		return false
	}
	f.i++
	if f.peek() == ']' {
		f.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch f.peek() {
		case ',':
			f.i++
		case ']':
			f.i++
			return true
		default:
			return false
		}
	}
}

// skip consumes one value of any type, checking its syntax as strictly as
// encoding/json does (or more).
func (f *fastScan) skip(depth int) bool {
	if depth > maxFastDepth {
		return false
	}
	switch c := f.peek(); {
	case c == '{':
		return f.object(depth, nil, true, nil) // no names: every value skipped, keys checked
	case c == '[':
		return f.array(depth, func() bool { return f.skip(depth + 1) })
	case c == '"':
		return f.skipString()
	case c == 't':
		return f.literal("true")
	case c == 'f':
		return f.literal("false")
	case c == 'n':
		return f.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return f.number()
	}
	return false
}

func (f *fastScan) literal(l string) bool {
	if strings.HasPrefix(f.s[f.i:], l) {
		f.i += len(l)
		return true
	}
	return false
}

// skipString consumes a string, escapes and all (checked).
func (f *fastScan) skipString() bool {
	j := f.i + 1
	for {
		q := quoteOrBackslash(f.b[j:])
		if q < 0 {
			return false
		}
		if f.b[j+q] == '"' {
			f.i = j + q + 1
			return true
		}
		j += q + 1 // the escaped character
		if j >= len(f.b) {
			return false
		}
		switch f.b[j] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			j++
		case 'u':
			if j+4 >= len(f.b) {
				return false
			}
			for _, h := range f.b[j+1 : j+5] {
				if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
					return false
				}
			}
			j += 5
		default:
			return false
		}
	}
}

// hasControl reports whether b holds a byte below 0x20, eight bytes at a
// time: JSON allows none in strings, and a record as CloudTrail writes it
// has none outside them; one that has any is left to encoding/json.
func hasControl(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if (w-0x2020202020202020)&^w&0x8080808080808080 != 0 {
			return true
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return true
		}
	}
	return false
}

// cleanText reports whether b holds no byte below 0x20 and is valid UTF-8:
// hasControl and utf8.Valid in one pass, eight bytes at a time, for the
// usual record that is all ASCII (utf8.Valid runs only when it is not).
func cleanText(b []byte) bool {
	const hi = 0x8080808080808080
	var high uint64
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if (w-0x2020202020202020)&^w&hi != 0 {
			return false
		}
		high |= w
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return false
		}
		high |= uint64(b[i])
	}
	return high&hi == 0 || utf8.Valid(b)
}

// number consumes a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (f *fastScan) number() bool {
	b, i := f.b, f.i
	digits := func() bool {
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > s
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	f.i = i
	return true
}
