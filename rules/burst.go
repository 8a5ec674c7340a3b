package rules

import "time"

// burstTracker counts, per caller, the distinct buckets read within a
// sliding window of event time, and says when a burst starts. A burst ends
// when the caller's count falls below the threshold again; one alert is
// raised per burst. Memory is bounded: per caller at most cap buckets, and
// callers idle for a window are dropped.
type burstTracker struct {
	threshold int
	window    time.Duration
	callers   map[string]*callerReads
	swept     time.Time
}

type callerReads struct {
	seen    map[string]time.Time
	newest  time.Time
	inBurst bool
}

func newBurstTracker(threshold int, window time.Duration) *burstTracker {
	return &burstTracker{threshold: threshold, window: window, callers: map[string]*callerReads{}}
}

func (b *burstTracker) cap() int { return 4*b.threshold + 64 }

// observe records that caller read bucket at t. It returns true, with the
// number of distinct buckets in the window, when this read starts a burst.
func (b *burstTracker) observe(caller, bucket string, t time.Time) (bool, int) {
	c := b.callers[caller]
	if c == nil {
		c = &callerReads{seen: map[string]time.Time{}}
		b.callers[caller] = c
	}
	if t.After(c.newest) {
		c.newest = t
	}
	if t.IsZero() {
		t = c.newest
	}
	if prev, ok := c.seen[bucket]; !ok || t.After(prev) {
		c.seen[bucket] = t
	}
	cutoff := c.newest.Add(-b.window)
	for k, v := range c.seen {
		if v.Before(cutoff) {
			delete(c.seen, k)
		}
	}
	for len(c.seen) > b.cap() {
		oldest, ot := "", time.Time{}
		for k, v := range c.seen {
			if oldest == "" || v.Before(ot) {
				oldest, ot = k, v
			}
		}
		delete(c.seen, oldest)
	}
	b.sweep(c.newest)
	n := len(c.seen)
	if n < b.threshold {
		c.inBurst = false
		return false, n
	}
	if c.inBurst {
		return false, n
	}
	c.inBurst = true
	return true, n
}

// sweep drops callers that have been idle for a whole window.
func (b *burstTracker) sweep(now time.Time) {
	if now.Sub(b.swept) < b.window {
		return
	}
	b.swept = now
	for k, c := range b.callers {
		if c.newest.Before(now.Add(-b.window)) {
			delete(b.callers, k)
		}
	}
}
