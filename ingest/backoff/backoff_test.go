package backoff

import (
	"context"
	"testing"
	"time"
)

func TestWaitsDoubleWithinJitterAndReset(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 800 * time.Millisecond}
	for round := range 2 {
		for i, d := range []time.Duration{100, 200, 400, 800, 800} {
			d *= time.Millisecond
			if w := b.Next(); w < d/2 || w > d {
				t.Errorf("round %d try %d: wait %s outside [%s, %s]", round, i, w, d/2, d)
			}
		}
		b.Reset()
	}
	var zero Backoff
	if w := zero.Next(); w < 500*time.Millisecond || w > time.Second {
		t.Errorf("zero value's first wait %s, want 0.5s to 1s", w)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep reported a whole wait on an ended context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep cut a wait short")
	}
}
