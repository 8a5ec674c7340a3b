package config

import (
	"time"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

func applySectionDefaults(c *Config) {
	if l := c.Sources.Lookup; l != nil {
		setDur(&l.Interval, 30*time.Second)
		setDur(&l.Overlap, 20*time.Minute)
		setDur(&l.StartFrom, 24*time.Hour)
	}
	if s := c.Sources.SQS; s != nil {
		if s.Workers == 0 {
			s.Workers = 4
		}
		if s.MaxReceives == 0 {
			s.MaxReceives = 5
		}
		setDur(&s.Visibility, 60*time.Second)
		setDur(&s.WaitTime, 20*time.Second)
	}
	if f := c.Sources.Files; f != nil {
		setDur(&f.Interval, 5*time.Second)
	}
	setDur(&c.Reload.Interval, 5*time.Second)
	if c.Limits.CustomRuleCost == 0 {
		c.Limits.CustomRuleCost = rules.DefaultCostLimit
	}
	if c.Limits.MaxRecordBytes == 0 {
		c.Limits.MaxRecordBytes = ingest.DefaultMaxRecordBytes
	}
	if c.Limits.MaxDecompressedBytes == 0 {
		c.Limits.MaxDecompressedBytes = ingest.DefaultMaxInputBytes
	}
	if c.Limits.MaxNesting == 0 {
		c.Limits.MaxNesting = ingest.DefaultMaxNesting
	}
	if c.Limits.MaxRulesPerRequest == 0 {
		c.Limits.MaxRulesPerRequest = ingest.DefaultMaxRules
	}
	if k := c.Sources.Kafka; k != nil && k.Group == "" {
		k.Group = "encwatch"
	}
	for i := range c.Sinks.Webhooks {
		w := &c.Sinks.Webhooks[i]
		setDur(&w.Timeout, 10*time.Second)
		if w.MinSeverity == "" {
			w.MinSeverity = "info"
		}
	}
}

func setDur(d *rules.Duration, v time.Duration) {
	if *d == 0 {
		*d = rules.Duration(v)
	}
}
