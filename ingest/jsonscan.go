package ingest

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// fastScan is the data-event scanner's cursor over one record: b the
// bytes, s the same as one string (the events' strings are its
// substrings).
type fastScan struct {
	b []byte
	s string
	i int
}

// maxFastDepth bounds the nesting the scanner follows; deeper records go to
// encoding/json (and the decoder's nesting limit).
const maxFastDepth = 64

func (f *fastScan) ws() {
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
	j := bytes.IndexByte(f.b[start:], '"')
	if j < 0 || bytes.IndexByte(f.b[start:start+j], '\\') >= 0 {
		return "", false
	}
	f.i = start + j + 1
	return f.s[start : start+j], true
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

// object reads an object. For each key among names (compared
// case-insensitively when lowered: the map keys of requestParameters and
// responseElements, which encwatch lowers), it calls field with the name;
// other keys' values are skipped. A key with an escape or a non-ASCII
// byte, one of names twice, or (not lowered: a struct, whose fields
// encoding/json matches case-insensitively) a key equal to one of names
// only case-insensitively, is declined.
func (f *fastScan) object(depth int, names []string, lowered bool, field func(key string) bool) bool {
	if depth > maxFastDepth || f.peek() != '{' {
		return false
	}
	f.i++
	if f.peek() == '}' {
		f.i++
		return true
	}
	var seen uint64
	for {
		key, ok := f.str()
		if !ok {
			return false
		}
		for k := 0; k < len(key); k++ {
			if key[k] >= 0x80 {
				return false
			}
		}
		if f.peek() != ':' {
			return false
		}
		f.i++
		idx := -1
		for n, name := range names {
			if key == name || lowered && len(key) == len(name) && strings.EqualFold(key, name) {
				idx = n
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
				for _, name := range names {
					if len(key) == len(name) && strings.EqualFold(key, name) {
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
		q := bytes.IndexByte(f.b[j:], '"')
		if q < 0 {
			return false
		}
		e := bytes.IndexByte(f.b[j:j+q], '\\')
		if e < 0 {
			f.i = j + q + 1
			return true
		}
		j += e + 1 // the escaped character
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
