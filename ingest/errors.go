package ingest

import (
	"errors"
	"strings"
)

// Kinds of bad input, so that metrics can count them by reason. Errors
// reported through OnError wrap one of these (or a *SyntaxError).
var (
	ErrTooLarge     = errors.New("record too large")
	ErrTooDeep      = errors.New("record nested too deep")
	ErrTruncated    = errors.New("input truncated")
	ErrNotJSON      = errors.New("not JSON")
	ErrNotObject    = errors.New("record is not a JSON object")
	ErrUnknownShape = errors.New("unknown JSON shape")
	ErrLayout       = errors.New("not in CloudTrail's compact layout")
	// ErrNotRecord means a JSON object was read but it is not a CloudTrail record.
	ErrNotRecord     = errors.New("not a CloudTrail record (no eventSource or eventName)")
	ErrInputTooLarge = errors.New("input decompresses past the limit")
	ErrTooManyRules  = errors.New("too many encryption rules in one request")
	ErrInvalidUTF8   = errors.New("record holds invalid UTF-8")
)

// ErrorReason names the kind of a bad-input error for a metric label:
// syntax, type, too_large, too_deep, truncated, not_json, not_object,
// not_record, unknown_shape, layout, gzip or io.
func ErrorReason(err error) string {
	var se *SyntaxError
	switch {
	case errors.As(err, &se):
		return "syntax"
	case errors.Is(err, ErrInputTooLarge):
		return "input_too_large"
	case errors.Is(err, ErrTooManyRules):
		return "too_many_rules"
	case errors.Is(err, ErrInvalidUTF8):
		return "invalid_utf8"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrTooDeep):
		return "too_deep"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrNotJSON):
		return "not_json"
	case errors.Is(err, ErrNotObject):
		return "not_object"
	case errors.Is(err, ErrNotRecord):
		return "not_record"
	case errors.Is(err, ErrUnknownShape):
		return "unknown_shape"
	case errors.Is(err, ErrLayout):
		return "layout"
	case strings.Contains(err.Error(), "gzip"):
		return "gzip"
	case strings.Contains(err.Error(), "field "):
		return "type"
	}
	return "io"
}
