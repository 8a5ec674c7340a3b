package config

import (
	"time"

	"github.com/encwatch/encwatch/alert/remediate"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/filesrc"
	"github.com/encwatch/encwatch/ingest/inventory"
	"github.com/encwatch/encwatch/ingest/lookup"
	"github.com/encwatch/encwatch/ingest/s3sqs"
	"github.com/encwatch/encwatch/rules"
)

func applySectionDefaults(c *Config) {
	if l := c.Sources.Lookup; l != nil {
		setDur(&l.Interval, lookup.DefaultInterval)
		setDur(&l.Overlap, lookup.DefaultOverlap)
		setDur(&l.StartFrom, lookup.DefaultStartFrom)
	}
	if s := c.Sources.SQS; s != nil {
		if s.Workers == 0 {
			s.Workers = s3sqs.DefaultWorkers
		}
		if s.MaxReceives == 0 {
			s.MaxReceives = s3sqs.DefaultMaxReceives
		}
		setDur(&s.Visibility, s3sqs.DefaultVisibility)
		setDur(&s.WaitTime, s3sqs.DefaultWaitTime)
	}
	if inv := c.Sources.Inventory; inv != nil {
		setDur(&inv.Interval, inventory.DefaultInterval)
		if inv.Rate == 0 {
			inv.Rate = inventory.DefaultRate
		}
		if l := c.Sources.Lookup; l != nil {
			if len(inv.Regions) == 0 {
				inv.Regions = append([]string(nil), l.Regions...)
			}
			if len(inv.Accounts) == 0 {
				inv.Accounts = append([]Account(nil), l.Accounts...)
			}
		}
	}
	if f := c.Sources.Files; f != nil {
		setDur(&f.Interval, filesrc.DefaultPollInterval)
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
	if r := c.Pipeline.Repartition; r != nil && r.Kafka != nil && r.Kafka.Group == "" {
		r.Kafka.Group = "encwatch-repartition"
	}
	if r := c.Sinks.Remediate; r != nil {
		if len(r.Rules) == 0 {
			r.Rules = append([]string(nil), remediate.DefaultRules...)
		}
		if len(r.Buckets) == 0 {
			r.Buckets = []string{"*"}
		}
		if r.Rate == 0 {
			r.Rate = 1
		}
	}
	for i := range c.Sinks.Alertmanager {
		a := &c.Sinks.Alertmanager[i]
		setDur(&a.ResolveAfter, time.Hour)
		setDur(&a.Timeout, 10*time.Second)
		if a.MinSeverity == "" {
			a.MinSeverity = "info"
		}
	}
	for i := range c.Sinks.Webhooks {
		w := &c.Sinks.Webhooks[i]
		setDur(&w.Timeout, 10*time.Second)
		if w.Concurrency == 0 {
			w.Concurrency = 4
		}
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
