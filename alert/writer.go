package alert

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Writer writes alerts to a stream, one per line, as JSON (the alert v1
// format) or as readable text. It is safe for concurrent use.
type Writer struct {
	mu      sync.Mutex
	w       *bufio.Writer
	text    bool
	ocsf    bool
	version string
}

// NewOCSFWriter writes one OCSF Detection Finding per line; version is
// encwatch's, for metadata.product.version.
func NewOCSFWriter(w io.Writer, version string) *Writer {
	return &Writer{w: bufio.NewWriter(w), ocsf: true, version: version}
}

// NewJSONWriter writes alert v1 JSON lines.
func NewJSONWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w)} }

// NewTextWriter writes one readable line per alert.
func NewTextWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w), text: true} }

// Write writes one alert. Output is buffered until Flush.
func (w *Writer) Write(a Alert) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.text {
		_, err := w.w.WriteString(Text(a) + "\n")
		return err
	}
	var b []byte
	var err error
	if w.ocsf {
		b, err = json.Marshal(OCSF(a, w.version))
	} else {
		b, err = json.Marshal(a)
	}
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.w.Write(b)
	return err
}

// Flush writes out buffered alerts.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Flush()
}

// Text renders an alert as one readable line starting with its severity
// and rule id. Everything in it but the layout comes from a CloudTrail
// record, which whoever can write to a source controls: control characters
// (a newline that would forge another alert line, terminal escapes) are
// written as \xNN or \uNNNN escapes.
func Text(a Alert) string { return Printable(text(a)) }

// Printable escapes control characters and invalid UTF-8, so that hostile
// text cannot break a line or drive a terminal.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func text(a Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %-32s %s", strings.ToUpper(a.Severity), a.Rule, a.Summary)
	actor := a.Event.Actor.ARN
	if actor == "" {
		actor = a.Event.Actor.Type
	}
	if a.Basis == BasisInventory {
		fmt.Fprintf(&b, " | read by the inventory at %s", a.Event.Time)
	} else {
		fmt.Fprintf(&b, " | event %s %s at %s by %s", a.Event.Name, a.Event.ID, a.Event.Time, orDash(actor))
	}
	if a.Bucket.Account != "" || a.Bucket.Region != "" {
		fmt.Fprintf(&b, " | %s %s", orDash(a.Bucket.Account), orDash(a.Bucket.Region))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
