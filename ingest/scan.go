package ingest

// valueScanner finds the end of one JSON object or array without decoding
// it. It is resumable: feed it the bytes of a value in pieces and it reports
// where the value ends, so a growing window is never scanned twice. It
// tracks nesting and strings only; syntax is checked later by the decoder.
type valueScanner struct {
	depth int
	inStr bool
	esc   bool
	// maxDepth bounds nesting; deeper input is reported, not followed.
	maxDepth int
	tooDeep  bool
}

// scan advances over b, which continues the value. It returns the index
// just past the end of the value, or -1 when b ends before the value does.
func (s *valueScanner) scan(b []byte) int {
	i := 0
	for i < len(b) {
		if s.inStr {
			// Skip to the next quote or backslash.
			for i < len(b) {
				c := b[i]
				if s.esc {
					s.esc = false
				} else if c == '\\' {
					s.esc = true
				} else if c == '"' {
					s.inStr = false
					i++
					break
				}
				i++
			}
			if s.inStr {
				return -1
			}
			if s.depth == 0 {
				return i
			}
			continue
		}
		switch b[i] {
		case '"':
			s.inStr = true
		case '{', '[':
			s.depth++
			if s.maxDepth > 0 && s.depth > s.maxDepth {
				s.tooDeep = true
			}
		case '}', ']':
			s.depth--
			if s.depth <= 0 {
				return i + 1
			}
		}
		i++
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }
