// Package backoff is the one exponential backoff with jitter that every
// retry loop of encwatch uses (LookupEvents, SQS, the outbox's sinks).
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff gives the waits between tries: each drawn from [d/2, d], with d
// starting at Min and doubling up to Max. The zero value waits 1s to 30s.
// Not safe for concurrent use; each retry loop has its own.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the wait before the next try and doubles the next one.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = time.Second
	}
	if hi < lo {
		hi = max(lo, 30*time.Second)
	}
	if b.cur < lo {
		b.cur = lo
	}
	d := b.cur
	b.cur = min(2*b.cur, hi)
	return d/2 + rand.N(d/2+1)
}

// Reset starts the waits again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d or until ctx ends; it reports whether the whole wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
