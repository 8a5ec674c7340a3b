package ingest

import (
	"fmt"
	"io"
)

// Limits bound what hostile or broken input can cost. Zero fields take
// the defaults.
type Limits struct {
	// MaxRecordBytes bounds one record (default 8 MiB).
	MaxRecordBytes int
	// MaxInputBytes bounds the decompressed size of one file, S3 object or
	// message (default 4 GiB): a gzip bomb is cut off there.
	MaxInputBytes int64
	// MaxNesting bounds how deep a record nests (default 64).
	MaxNesting int
	// MaxRules bounds the rules of one ServerSideEncryptionConfiguration
	// that are judged (default 100); the rest are reported, not judged.
	MaxRules int
}

// Default limits.
const (
	DefaultMaxInputBytes = 4 << 30
	DefaultMaxNesting    = 64
	DefaultMaxRules      = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxRecordBytes <= 0 {
		l.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if l.MaxInputBytes <= 0 {
		l.MaxInputBytes = DefaultMaxInputBytes
	}
	if l.MaxNesting <= 0 {
		l.MaxNesting = DefaultMaxNesting
	}
	if l.MaxRules <= 0 {
		l.MaxRules = DefaultMaxRules
	}
	return l
}

// capped fails reads past a byte limit instead of silently stopping, so
// that a bomb is reported and not mistaken for the end of the input.
type capped struct {
	r    io.Reader
	left int64
	max  int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("%w: more than %d bytes (a gzip bomb?); the rest is skipped", ErrInputTooLarge, c.max)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
