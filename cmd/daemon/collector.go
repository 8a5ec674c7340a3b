package daemon

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/rules"
)

// stateCollector computes at scrape time what depends on the clock or on
// the stored state: how far behind each source is, how old its checkpoint
// is, and how many buckets are known by type and compliance (a gauge per
// state, not per bucket).
type stateCollector struct {
	db  *bolt.DB
	now func() time.Time

	mu         sync.Mutex
	newest     map[string]time.Time // source -> newest eventTime judged
	checkpoint map[string]time.Time // source -> last checkpoint stored
	buckets    map[[2]string]int
	counted    time.Time

	lag, cpAge, known *prometheus.Desc
}

func newStateCollector(db *bolt.DB) *stateCollector {
	return &stateCollector{db: db, now: time.Now, newest: map[string]time.Time{}, checkpoint: map[string]time.Time{},
		lag: prometheus.NewDesc("encwatch_source_lag_seconds",
			"Now minus the newest eventTime a source has handed on (LookupEvents shows events minutes late).", []string{"source"}, nil),
		cpAge: prometheus.NewDesc("encwatch_checkpoint_age_seconds",
			"Seconds since a source last stored its checkpoint.", []string{"source"}, nil),
		known: prometheus.NewDesc("encwatch_buckets",
			"Buckets encwatch knows from encryption events and the inventory, by type and compliance with the policy (compliant, non-compliant, unknown: a bucket the inventory could not read).", []string{"type", "state"}, nil),
	}
}

func (c *stateCollector) observe(source string, newest time.Time, checkpointed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if newest.After(c.newest[source]) {
		c.newest[source] = newest
	}
	if checkpointed {
		c.checkpoint[source] = c.now()
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.cpAge
	ch <- c.known
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for s, t := range c.newest {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, now.Sub(t).Seconds(), s)
	}
	for s, t := range c.checkpoint {
		ch <- prometheus.MustNewConstMetric(c.cpAge, prometheus.GaugeValue, now.Sub(t).Seconds(), s)
	}
	if now.Sub(c.counted) > 15*time.Second {
		counts := map[[2]string]int{}
		for _, t := range []string{"directory", "general-purpose"} {
			for _, c := range []string{rules.Compliant, rules.NonCompliant, rules.Unknown} {
				counts[[2]string{t, c}] = 0
			}
		}
		err := c.db.View(func(tx *bolt.Tx) error {
			return rules.ForEachBucket(tx, func(_ string, st rules.BucketState) error {
				counts[[2]string{st.Bucket.Type, st.Compliance()}]++
				return nil
			})
		})
		if err == nil {
			c.buckets, c.counted = counts, now
		}
	}
	for k, n := range c.buckets {
		ch <- prometheus.MustNewConstMetric(c.known, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// sourceTimes returns, per source, the newest eventTime handed on and when
// its checkpoint was last stored.
func (c *stateCollector) sourceTimes() (newest, checkpoint map[string]time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	newest, checkpoint = map[string]time.Time{}, map[string]time.Time{}
	for k, v := range c.newest {
		newest[k] = v
	}
	for k, v := range c.checkpoint {
		checkpoint[k] = v
	}
	return newest, checkpoint
}
