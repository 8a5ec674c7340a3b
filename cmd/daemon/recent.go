package daemon

import (
	"sync"

	"github.com/encwatch/encwatch/alert"
)

// recentAlerts is a ring of the latest alerts stored, for the web page.
type recentAlerts struct {
	mu   sync.Mutex
	ring []alert.Alert
	next int
	full bool
}

func newRecentAlerts(n int) *recentAlerts { return &recentAlerts{ring: make([]alert.Alert, n)} }

func (r *recentAlerts) add(as []alert.Alert) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range as {
		r.ring[r.next] = a
		r.next = (r.next + 1) % len(r.ring)
		if r.next == 0 {
			r.full = true
		}
	}
}

// latest returns the alerts, newest first.
func (r *recentAlerts) latest() []alert.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.ring)
	}
	out := make([]alert.Alert, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+len(r.ring))%len(r.ring)])
	}
	return out
}
